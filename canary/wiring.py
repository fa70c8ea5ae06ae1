"""What a release reports to: the one place that assembles it, for every way a release runs.

`canary run`, a deployment run started from the Prefect UI, the API or a schedule, a
release-train child, a resumed run and the state hooks of a stopped run all carry out a
release through `reporting_release`, so each reports to the same places:

* the run log (and the console, when the process asks for it with `canary.notify.notifying`);
* the release's Slack thread, when the plan names a channel and a bot token is found;
* Prefect events (`canary.release.*`), in a flow run;
* the report: its recorder, then the markdown and plot published when the release ends,
  and the live progress artifact of the canary's share of traffic;
* the release metrics, when the environment asks for them (canary.notify.metrics).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from canary.notify import Notifier, Notifiers, current_notifier, notifying_here
from canary.notify.console import run_logger
from canary.notify.metrics import metrics_notifier_from_env
from canary.notify.prefect_events import PrefectEventNotifier
from canary.release import Release, ReleaseResult
from canary.report.progress import ProgressNotifier
from canary.report.publishing import publish
from canary.report.recorder import ReportRecorder
from canary.slack.api import TOKEN_ENV, TOKEN_SECRET_BLOCK

log = logging.getLogger(__name__)


@contextlib.contextmanager
def reporting_release(
    release: Release,
    result_of: Callable[[], ReleaseResult | None] | None = None,
) -> Iterator[None]:
    """Send the events of the release run in the block everywhere it reports to.

    With `result_of` (the flow's ReleaseResult once the block is over, None if none), the
    release's report is published when the block ends, however it ends. Context-local:
    releases running side by side in threads of one process keep apart.
    """
    recorder = ReportRecorder()
    notifiers = [*_process_notifiers(), recorder, *release_notifiers(release)]
    with notifying_here(*notifiers):
        try:
            yield
        finally:
            if result_of is not None:
                publish(release.identity, release.plan, recorder.events, result_of())


def release_notifiers(release: Release) -> list[Notifier]:
    """The release's own destinations: Slack, Prefect events, progress, metrics."""
    notifiers: list[Notifier] = []
    slack = slack_notifier(release)
    if slack is not None:
        notifiers.append(slack)
    if _in_flow_run():
        notifiers += [PrefectEventNotifier(), ProgressNotifier(release.identity)]
    metrics = metrics_notifier_from_env()
    if metrics is not None:
        notifiers.append(metrics)
    return notifiers


def slack_notifier(release: Release) -> Notifier | None:
    """The plan's Slack thread; a warning naming where the token was looked for if none."""
    settings = release.plan.notifications.slack
    if settings is None:
        return None
    from canary.slack.thread import slack_notifier_from_env

    notifier = slack_notifier_from_env(settings.channel)
    if notifier is None:
        run_logger(log).warning(
            "the plan asks for Slack (%s) but no bot token was found: neither %s in the "
            "environment nor a Prefect Secret block %r; events go to the run log only",
            settings.channel,
            TOKEN_ENV,
            TOKEN_SECRET_BLOCK,
        )
    return notifier


def _process_notifiers() -> list[Notifier]:
    """What the process sends every release's events to (the run log by default)."""
    current = current_notifier()
    return list(current.notifiers) if isinstance(current, Notifiers) else [current]


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None
