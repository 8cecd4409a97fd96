"""`Pending`: a result set once, callbacks, a blocking read (the group commit's futures)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import InvalidStateError

import pytest

from app.pending import Pending


def test_callbacks_run_once_set_or_at_once_when_already_set() -> None:
    pending: Pending[int] = Pending()
    seen: list[int] = []
    pending.add_done_callback(lambda p: seen.append(p.result()))
    assert seen == [] and not pending.done()
    pending.set_result(7)
    pending.add_done_callback(lambda p: seen.append(p.result() * 2))
    assert seen == [7, 14] and pending.done()


def test_an_exception_is_raised_to_whoever_reads_the_result() -> None:
    pending: Pending[int] = Pending()
    pending.set_exception(LookupError("refused"))
    with pytest.raises(LookupError, match="refused"):
        pending.result()


def test_a_result_is_set_once() -> None:
    pending = Pending.settled("first")
    with pytest.raises(InvalidStateError):
        pending.set_result("second")
    with pytest.raises(InvalidStateError):
        pending.set_exception(RuntimeError("late"))
    assert pending.result() == "first"


def test_a_blocking_read_waits_for_another_thread_and_times_out_alone() -> None:
    pending: Pending[str] = Pending()
    with pytest.raises(TimeoutError):
        pending.result(timeout=0.01)
    started = threading.Event()

    def setter() -> None:
        started.wait()
        pending.set_result("ack")

    thread = threading.Thread(target=setter)
    thread.start()
    started.set()
    assert pending.result(timeout=30) == "ack"
    thread.join()


def test_a_failing_callback_is_logged_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import pending as module

    # An earlier test's logging.config (alembic's) may have disabled existing loggers.
    monkeypatch.setattr(module.log, "disabled", False)
    pending: Pending[int] = Pending()
    seen: list[int] = []
    pending.add_done_callback(lambda p: 1 / 0)
    pending.add_done_callback(lambda p: seen.append(p.result()))
    with caplog.at_level(logging.ERROR, logger="app.pending"):
        pending.set_result(3)
    assert seen == [3] and "ZeroDivisionError" in caplog.text
