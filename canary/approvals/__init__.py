"""Human approval gates: plan models, the in-flow gate, the Slack listener and the CLI.

Submodules are imported on use: the plan imports `canary.approvals.spec`, and plan
validation must not pay for Prefect or Slack.
"""
