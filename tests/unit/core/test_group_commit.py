"""`GroupCommit`'s batching: natural groups, and the busy window that lets a group gather
more only while callers arrive together."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from flask import Flask

from app.services.group import GroupCommit


class Recorder:
    """A `run` that records each group and holds the first one until released."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.started.set()
            assert self.release.wait(30)
        return [item.upper() for item in items]


def test_a_busy_group_gathers_what_arrives_within_the_window(app: Flask):
    run = Recorder()
    # A window far longer than the test: a group that waited for it would never end in
    # time, so every group below ends because it is full or because nobody was waiting.
    group = GroupCommit(app, run, name="test", max_group=2, busy_window=3600.0)
    try:
        first = group.submit_nowait("a")  # alone: runs at once, without the window
        assert run.started.wait(30)
        queued = [group.submit_nowait("b"), group.submit_nowait("c")]
        run.release.set()
        assert first.result(timeout=30) == "A"
        assert [p.result(timeout=30) for p in queued] == ["B", "C"]
        # The group before held two: the next one waits for a second caller.
        later = group.submit_nowait("d")
        assert not later.done()
        other = group.submit_nowait("e")
        assert (later.result(timeout=30), other.result(timeout=30)) == ("D", "E")
        assert run.groups == [["a"], ["b", "c"], ["d", "e"]]
    finally:
        group.close()


def test_after_a_commit_the_hook_sees_the_groups_ledger_entries_and_where_they_went(
        app: Flask, caplog):
    from sqlalchemy import select

    from app.extensions import db
    from app.models import AuditEntry
    from app.services import uow

    def run(items: Sequence[str]) -> list[str]:
        for item in items:
            uow.record(kind="test.item", subject=item, actor="test", payload={})
        return list(items)

    seen: list[tuple[int | None, list[str]]] = []

    def after(done: uow.Pending) -> None:
        seen.append((done.ledger_from, [entry["subject"] for entry in done.ledger]))
        raise RuntimeError("the hook failed")  # the group committed all the same

    group = GroupCommit(app, run, name="test", after=after)
    try:
        assert group.submit("a", timeout=30) == "a"
    finally:
        group.close()
    with app.app_context():
        stored = db.session.execute(select(AuditEntry.seq).where(
            AuditEntry.subject == "a")).scalar_one()
    assert seen == [(stored, ["a"])]
    assert "the hook failed" in caplog.text
