"""Bulk inbox actions: one action for many manual-retry tasks, reported task by task.

Each task is completed in a transaction of its own (the edge opens one unit of work per
task), so one task that another operator finished a moment ago does not undo the others.
What the report says is what happened after re-checking under the instance lock: completed,
already done (409) or unknown (404) — never what the caller assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid, LeaseflowError
from ..extensions import db
from ..models import HumanTask, ProcessInstance
from . import instances

MAX_TASKS = 500


@dataclass(frozen=True, kw_only=True)
class BulkRequest:
    ids: tuple[int, ...]
    action: str
    comment: str | None


def request_of(data: Mapping[str, Any]) -> BulkRequest:
    """`{ids, action, comment?}`, checked as a whole before any task is touched."""
    unknown = sorted(set(data) - {"ids", "action", "comment"})
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}", code="invalid_request",
                      details=[{"field": f, "message": "unknown field"} for f in unknown])
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_TASKS or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise Invalid(f"ids must be a list of 1 to {MAX_TASKS} task ids",
                      code="invalid_request", details=[{"field": "ids"}])
    action = data.get("action")
    if action not in instances.ACTIONS:
        raise Invalid(f"action must be one of {', '.join(instances.ACTIONS)}",
                      code="invalid_request",
                      details=[{"field": "action", "allowed": list(instances.ACTIONS)}])
    comment = data.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
        raise Invalid("comment must be text of at most 2000 characters",
                      code="invalid_request", details=[{"field": "comment"}])
    # Duplicates would report a 409 against the caller's own first completion.
    return BulkRequest(ids=tuple(dict.fromkeys(ids)), action=str(action), comment=comment)


def complete_one(task_id: int, request: BulkRequest, *, user: str) -> int:
    """Complete one task inside the caller's unit of work; errors propagate to `report`."""
    task = instances.complete_task(task_id, action=request.action, comment=request.comment,
                                   user=user)
    return task.id


def report(task_id: int, error: LeaseflowError | None) -> dict[str, Any]:
    """What happened to one task, read back after its transaction ended."""
    if error is not None:
        out: dict[str, Any] = {"id": task_id, "status": error.status, "error": error.code,
                               "message": error.message}
        task = db.session.get(HumanTask, task_id)
        if task is not None:  # e.g. who completed it first, and how
            out.update(state=task.state, action=task.action, completed_by=task.completed_by)
        return out
    task = db.session.get(HumanTask, task_id)
    assert task is not None
    instance = db.session.get(ProcessInstance, task.instance_id)
    return {"id": task_id, "status": 200, "state": task.state, "action": task.action,
            "completed_by": task.completed_by,
            "instance": {"id": task.instance_id,
                         "state": instance.state if instance is not None else None}}
