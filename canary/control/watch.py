"""In the release run: the thread that sees operators' claims, and the release's control.

`ReleaseControl` is made by the release's guard (canary.ownership), one per release run,
with an `OperatorWatch` polling in a thread of its own, so that a hold's analysis rounds
never wait on the Prefect API: while a hold runs, it reads the open decision slot's claim
every CONTROL_POLL_S seconds (and, while the release is paused, the run's state: the
Prefect UI resumes it by its Resume form), and wakes the hold when it finds one. What a
hold then does is canary.control.holding.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from canary.approvals.inconclusive import union_of_approvers
from canary.control.state import (
    ControlRecord,
    SlotClaim,
    claim_slot,
    operator_title,
    save_record,
    slot_claim,
)
from canary.events import EventKind
from canary.notify.console import run_logger
from canary.release import Release, ReleaseResult, emit
from canary.stopping import abort_requested_by

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

CONTROL_POLL_S = 1.5  # faster polls slowed the release's own writes to a busy SQLite server


class OperatorWatch:
    """Polls the claim of the slot a hold follows (and a paused run's state) until closed."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self.woken = threading.Event()  # set when something was found: the hold acts
        self._lock = threading.Lock()
        self._slot: int | None = None
        self._pause_key: str | None = None
        self._found: tuple[int, SlotClaim] | None = None
        self._resumed: str | None = None  # the pause key the run was resumed from
        self._closed = threading.Event()

    def follow(self, slot: int | None, pause_key: str | None = None) -> None:
        """Watch decision slot `slot` (None: none, no hold runs), and the pause in force."""
        with self._lock:
            self._slot, self._pause_key = slot, pause_key

    def claim_at(self, slot: int) -> SlotClaim | None:
        """The claim found for `slot`, if one was."""
        with self._lock:
            found = self._found
        return found[1] if found is not None and found[0] == slot else None

    def resumed(self, pause_key: str) -> bool:
        """Whether the run was seen resumed (Running) while paused under `pause_key`."""
        with self._lock:
            return self._resumed == pause_key

    def watch(self) -> None:
        """The polling loop; run it in a thread. One client for all its reads: a poll is
        then one request on an open connection, which a busy release hardly notices."""
        from prefect.client.orchestration import get_client

        if self.run_id is None:
            return
        with get_client(sync_client=True) as client:
            while not self._closed.wait(CONTROL_POLL_S):
                self._poll(client, self.run_id)

    def _poll(self, client: Any, run_id: str) -> None:
        with self._lock:
            slot, pause_key = self._slot, self._pause_key
        if slot is None:
            return
        try:
            found = slot_claim(run_id, slot, client)
            state = client.read_flow_run(run_id).state if pause_key is not None else None
        except Exception as exc:  # the Prefect API is away: the hold goes on meanwhile
            log.warning("cannot read operator requests of run %s: %s", run_id, exc)
            return
        self._note(slot, found, pause_key, state is not None and state.is_running())

    def _note(
        self, slot: int, found: SlotClaim | None, pause_key: str | None, running: bool
    ) -> None:
        with self._lock:
            if slot != self._slot:  # the hold moved on meanwhile
                return
            news = False
            if found is not None and self._found != (slot, found):
                self._found, news = (slot, found), True
            if running and pause_key == self._pause_key and self._resumed != pause_key:
                self._resumed, news = pause_key, True
        if news:
            self.woken.set()

    def close(self) -> None:
        self._closed.set()
        self.woken.set()


class ReleaseControl:
    """The operator controls of one release run: its decision slots and what they decided.

    Only the release's own thread (the flow, its hold) acts; the watch's thread only reads.
    """

    def __init__(self, release: Release, run_id: str | None):
        self.release = release
        self.run_id = run_id
        self.watch = OperatorWatch(run_id)
        self.skipping: set[str] = set()  # phases a full promotion skips
        identity = release.identity
        self.record = ControlRecord(
            title=operator_title(identity.versions),
            approvers=union_of_approvers(release.plan.gates),
            initiator=release.initiator,
            run_id=run_id or "",
            release_id=release.release_id,
            versions=identity.versions,
            retry_of=release.retry_of,
        )

    @property
    def active(self) -> bool:
        """Operators can reach this release: it runs in a flow run."""
        return self.run_id is not None

    @property
    def paused_by(self) -> str | None:
        """Who paused the release, while it is paused."""
        return self.record.paused.by if self.record.paused else None

    @property
    def slot(self) -> int:
        return self.record.slot

    def next_slot(self, **changes: object) -> None:
        """The open slot was decided: open the next one."""
        self.update(slot=self.record.slot + 1, **changes)

    def update(self, **changes: object) -> None:
        self.record = self.record.model_copy(update=changes)

    def publish(self) -> None:
        """Write the control record, for the CLI and the listener; a failure is logged."""
        if not self.active:
            return
        try:
            save_record(self.record)
        except Exception as exc:  # requests then see an older record: the claim still rules
            run_logger(log).warning("cannot write the operators' record of the release: %s", exc)

    def skips(self, phase_name: str) -> bool:
        """Whether a full promotion skips this phase (and the gate before it)."""
        return phase_name in self.skipping

    def rolling_back(self, reason: str, aborted: bool = False) -> None:
        """Close the open slot: a request that comes now is told the release rolls back.

        `aborted`: by `canary abort` (or the thread's Abort button), an operator's action.
        """
        if not self.active:
            return
        if aborted:
            self._tell_abort()
        claim = SlotClaim(action="rolling-back", reason=reason)
        try:
            first = claim_slot(self.run_id or "", self.slot, claim)
        except Exception as exc:  # the rollback matters, not what a late request is told
            log.warning("cannot close the operators' slot of the release: %s", exc)
            first = None
        if first is not None:  # a request came just before: the rollback wins over it
            run_logger(log).info("not carried out (rolling back): %s", first.decided())
        self.next_slot(rolling_back=reason, holding=None, paused=None)
        self.publish()

    def _tell_abort(self) -> None:
        try:
            who = abort_requested_by(self.run_id or "")
        except Exception as exc:  # the abort is carried out all the same
            log.warning("cannot read who aborted the release: %s", exc)
            who = "someone"
        emit(
            self.release,
            EventKind.OPERATOR_ABORTED,
            self.record.holding,
            canary_weight=self.record.canary_weight,
            decision="operator-abort",
            message=f"aborted by {who}; rolling back",
        )

    def ended(self, result: ReleaseResult) -> None:
        """How the release ended, for `canary retry` and late requests."""
        self.update(outcome=result.outcome, reason=result.reason, holding=None, paused=None)
        self.publish()

    def close(self) -> None:
        self.watch.close()
