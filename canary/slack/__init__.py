"""Slack: the Web API client (`api`), the signed approval buttons (`buttons`) and the
release thread (`thread`, a notifier). The listener that receives clicks is
canary.approvals.listener."""
