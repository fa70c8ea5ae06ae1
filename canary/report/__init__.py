"""Release reports: a markdown summary, a phase table, a traffic progress bar and a plot.

`recorder` keeps a release's events and builds the report's data, `publishing` writes it
(Prefect artifacts, files), `render` and `plot` draw it, `sampling` reads its metric
curves from Prometheus, `progress` keeps the live progress artifact.
"""
