"""A SIGTERM that the code running at that moment lost still stops the release.

The lost signal is made real: a SIGTERM handler that swallows it, as a finaliser or a C
extension's callback does with Prefect's `TerminationSignal`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from prefect.exceptions import TerminationSignal

from canary.termination import TerminationWatch, watching_termination
from tests.support.waiting import wait_until


@pytest.fixture
def swallowed() -> Iterator[list[int]]:
    """SIGTERM and SIGUSR1 handled by a handler that loses them; the numbers it saw."""
    seen: list[int] = []
    before = {s: signal.signal(s, lambda n, _: seen.append(n)) for s in _SIGNALS}
    yield seen
    for number, handler in before.items():
        signal.signal(number, handler)


_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def test_a_swallowed_sigterm_is_remembered_and_raised_again(swallowed):
    with watching_termination() as watch:
        assert not watch.terminated()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: swallowed == [signal.SIGTERM], 10, message="the handler to run")

        assert watch.terminated()
        with pytest.raises(TerminationSignal) as raised:
            watch.raise_if_terminated()
    assert raised.value.signal == signal.SIGTERM
    assert watch.terminated()  # still known once the watch is closed


def test_other_signals_are_not_a_termination(swallowed):
    with watching_termination() as watch:
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_until(lambda: swallowed == [signal.SIGUSR1], 10, message="the handler to run")

        assert not watch.terminated()
        watch.raise_if_terminated()  # nothing to raise


def test_closing_gives_the_wakeup_descriptor_back():
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(-1)
    try:
        with watching_termination() as watch:  # nobody's: the watch takes it
            assert watch._pipe is not None
            assert _wakeup_fd() == watch._pipe[1]
        assert _wakeup_fd() == -1

        signal.set_wakeup_fd(write_end)  # an event loop's: the watch leaves it alone
        with watching_termination() as watch:
            assert watch._pipe is None
        assert _wakeup_fd() == write_end
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)


def _wakeup_fd() -> int:
    current = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(current)
    return current


def test_a_watch_opened_outside_the_main_thread_stays_closed():
    opened: list[TerminationWatch] = []
    worker = threading.Thread(target=lambda: opened.append(TerminationWatch().open()))
    worker.start()
    worker.join(timeout=30)

    assert opened and opened[0]._pipe is None
    assert not opened[0].terminated()
