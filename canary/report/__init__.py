"""Release reports: a markdown summary, a phase table, a traffic progress bar and a plot.

See `publishing` for where they go (Prefect artifacts, files) and `recorder` for their data.
"""

from canary.report.publishing import publish, reporting, reporting_to, requested_report
from canary.report.recorder import ReleaseReport, ReportRecorder, build_report

__all__ = [
    "ReleaseReport",
    "ReportRecorder",
    "build_report",
    "publish",
    "reporting",
    "reporting_to",
    "requested_report",
]
