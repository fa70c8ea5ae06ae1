"""Approval gates and notification settings of a release plan.

Only pydantic here: the plan imports this module, and `canary validate` must stay fast.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from canary.durations import Duration, format_duration
from canary.models import Model

GATE_PLACES = "header-route, step-N, promote or cleanup"
_GATE_PLACE = re.compile(r"^(header-route|step-[1-9][0-9]*|promote|cleanup)$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_SLACK_CHANNEL = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{2,})$")


def _gate_place(value: str) -> str:
    if not _GATE_PLACE.fullmatch(value):
        raise ValueError(f"{value!r} is not a place for a gate; use {GATE_PLACES}")
    return value


def _slack_user(value: str) -> str:
    if not _SLACK_USER.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack user id (U… or W…)")
    return value


def _slack_group(value: str) -> str:
    if not _SLACK_GROUP.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack user group id (S…)")
    return value


def _slack_channel(value: str) -> str:
    if not _SLACK_CHANNEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack channel (#name or a channel id)")
    return value


GatePlace = Annotated[str, AfterValidator(_gate_place)]
SlackUser = Annotated[str, AfterValidator(_slack_user)]
SlackGroup = Annotated[str, AfterValidator(_slack_group)]
SlackChannel = Annotated[str, AfterValidator(_slack_channel)]


class Approvers(Model):
    """Who may decide a gate: Slack users, members of Slack user groups, or anyone."""

    users: list[SlackUser] = Field(default_factory=list)
    groups: list[SlackGroup] = Field(default_factory=list)
    anyone: bool = Field(False, description="Any identity may decide; needs no users/groups.")

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if self.anyone and (self.users or self.groups):
            raise ValueError("give users/groups or anyone: true, not both")
        if not (self.anyone or self.users or self.groups):
            raise ValueError("name users or groups who may decide, or set anyone: true")
        return self


class Gate(Model):
    """A human decision the release waits for before a phase."""

    name: str | None = Field(None, max_length=80)
    before: GatePlace
    approvers: Approvers
    timeout: Duration = Field(1800.0, description="How long the gate waits for a decision.")
    on_timeout: Literal["rollback", "proceed"] = "rollback"
    four_eyes: bool = Field(False, description="The release's initiator may not approve.")
    promote_approves: bool = Field(
        False,
        description="An operator's promote into this phase by an approver of this gate "
        "counts as its approval.",
    )

    @model_validator(mode="after")
    def _timeout_positive(self) -> Gate:
        if self.timeout < 1:
            raise ValueError("timeout must be at least 1s")
        return self

    @property
    def key(self) -> str:
        """Stable id of the gate within its release; one gate per place."""
        return self.before

    @property
    def title(self) -> str:
        return self.name or f"gate before {self.before}"

    @property
    def timeout_text(self) -> str:
        return format_duration(self.timeout)


class SlackSettings(Model):
    channel: SlackChannel


class Notifications(Model):
    slack: SlackSettings | None = None


def gate_problems(gates: list[Gate], phase_names: list[str]) -> list[tuple[str, str]]:
    """(field path, message) for gates at places the plan lacks, taken twice, or named twice."""
    seen: dict[str, int] = {}
    names: dict[str, int] = {}
    problems = []
    for index, gate in enumerate(gates):
        if gate.name is not None and gate.name in names:
            first = names[gate.name]
            problems.append((f"gates[{index}].name", f"{gate.name!r} is taken (gates[{first}])"))
        elif gate.name is not None:
            names[gate.name] = index
        path = f"gates[{index}].before"
        if gate.before not in phase_names:
            places = ", ".join(p for p in phase_names if _GATE_PLACE.fullmatch(p))
            problems.append((path, f"the plan has no phase {gate.before!r} (it has {places})"))
        elif gate.before in seen:
            first = seen[gate.before]
            problems.append((path, f"a second gate before {gate.before!r} (see gates[{first}])"))
        seen.setdefault(gate.before, index)
    return problems
