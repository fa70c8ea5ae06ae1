"""Release events and notifiers: one failing or slow notifier never holds a release up."""

from __future__ import annotations

import io
import threading

from canary.events import EventKind, ReleaseEvent
from canary.notify import ConsoleNotifier, Notifier, Notifiers, current_notifier, notifying
from tests.support.events import release_event


def event(kind: EventKind = EventKind.WEIGHT_CHANGED, **fields: object) -> ReleaseEvent:
    defaults: dict[str, object] = {"phase": "step-1", "canary_weight": 20}
    return release_event(kind, **(defaults | fields))


class Recording:
    def __init__(self) -> None:
        self.events: list[ReleaseEvent] = []

    def notify(self, event: ReleaseEvent) -> None:
        self.events.append(event)


class Broken:
    def notify(self, event: ReleaseEvent) -> None:
        raise RuntimeError("chat is down")


class Stuck:
    def __init__(self) -> None:
        self.release = threading.Event()

    def notify(self, event: ReleaseEvent) -> None:
        self.release.wait(10)


def test_a_summary_is_one_readable_line():
    assert event(message="canary ready").summary() == (
        "reviews v1->v2  step-1  weight-changed  v2 at 20%  canary ready"
    )
    assert event(EventKind.PROMOTED, phase=None, canary_weight=None).summary() == (
        "reviews v1->v2  promoted"
    )


def test_console_notifier_prints_when_asked():
    out = io.StringIO()
    ConsoleNotifier(stdout=True, stream=out).notify(event())
    assert out.getvalue().rstrip().endswith("step-1  weight-changed  v2 at 20%")
    assert isinstance(ConsoleNotifier(), Notifier)


def test_a_broken_notifier_does_not_stop_the_others():
    first, last = Recording(), Recording()
    fan_out = Notifiers([first, Broken(), last])

    fan_out.notify(event())
    fan_out.notify(event(EventKind.PROMOTED))

    assert [e.kind for e in last.events] == [EventKind.WEIGHT_CHANGED, EventKind.PROMOTED]
    assert len(first.events) == 2
    fan_out.close()


def test_a_stuck_notifier_does_not_hold_the_release_up():
    stuck, recording = Stuck(), Recording()
    fan_out = Notifiers([stuck, recording], timeout=0.2)

    releasing = threading.Thread(target=lambda: [fan_out.notify(event()) for _ in range(3)])
    releasing.start()
    releasing.join(30)  # the stuck notifier never returns while the release goes on

    assert not releasing.is_alive(), "the release waited for a stuck notifier"
    assert len(recording.events) == 3
    stuck.release.set()
    fan_out.close()


def test_notifying_sets_the_current_notifier_for_the_block():
    before = current_notifier()
    recording = Recording()
    with notifying(recording):
        current_notifier().notify(event())
    assert current_notifier() is before
    assert len(recording.events) == 1
