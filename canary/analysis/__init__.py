"""Canary judgement: metric checks against Prometheus and the judges that decide.

Construct one `canary.analysis.analyzer.Analyzer` per release and call `check()` once per
interval. The plan's analysis settings are in `canary.analysis.spec`, which imports
nothing heavy: plan validation must not pay for numpy and scipy.
"""
