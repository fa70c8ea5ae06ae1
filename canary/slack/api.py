"""The Slack Web API client the release thread, the approvers' rules and the listener use."""

from __future__ import annotations

import os

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

DEFAULT_API_URL = "https://slack.com/api/"
TOKEN_ENV = "SLACK_BOT_TOKEN"
TOKEN_SECRET_BLOCK = "slack-bot-token"  # a Prefect Secret block, when the env has no token


def slack_client(token: str, base_url: str | None = None, *, retries: int = 2) -> WebClient:
    """A WebClient that retries connection errors, 429s (Retry-After) and 500/503s."""
    return WebClient(
        token=token,
        base_url=_with_slash(base_url or DEFAULT_API_URL),
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            RateLimitErrorRetryHandler(max_retry_count=retries),
            ServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


def slack_client_from_env() -> WebClient | None:
    """From SLACK_BOT_TOKEN (or the Prefect Secret `slack-bot-token`) and SLACK_API_URL."""
    token = os.environ.get(TOKEN_ENV) or secret_value(TOKEN_SECRET_BLOCK)
    if not token:
        return None
    return slack_client(token, os.environ.get("SLACK_API_URL"))


def secret_value(block: str) -> str | None:
    """The value of a Prefect Secret block; None without the block or the Prefect API."""
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(block, _sync=True).get())
    except Exception:  # Slack is simply not configured
        return None


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def group_members(client: WebClient, group: str) -> list[str]:
    """User ids in a Slack user group (needs the usergroups:read scope)."""
    return list(client.usergroups_users_list(usergroup=group).get("users") or [])
