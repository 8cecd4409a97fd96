"""Process administration on `/api/v1`: versions, diffs, instance migrations, bulk inbox actions.

A blueprint of its own next to `api.py` so the low-code admin surface can grow without
crowding the core API. Views parse input, call one service, render JSON; mutating views run
in a unit of work (bulk actions: one per task, so each task's outcome stands on its own).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import LeaseflowError
from ..extensions import db
from ..services import bulk, migration
from ..services.uow import unit_of_work
from .api import body, created
from .auth import actor, require

bp = Blueprint("admin_api", __name__, url_prefix="/api/v1")

# Rows and schemas for app.web.openapi (same shape as its ROUTES / SCHEMAS), kept next to the
# views they describe.
OPENAPI_ROUTES: list[tuple[str, str, str, str, dict[str, Any] | None]] = [
    ("get", "/processes/{key}/versions", "viewer",
     "Every version with checksum, author, time, and its instances per state", None),
    ("get", "/processes/{key}/diff", "viewer",
     "Semantic diff of two versions (?from=N&to=M): elements added, removed, changed", None),
    ("get", "/processes/{key}/migrations", "viewer", "Past migrations of instances", None),
    ("post", "/processes/{key}/migrations", "admin",
     "Dry run (default) or move the movable instances of one version to another",
     {"$ref": "#/components/schemas/MigrationRequest"}),
    ("get", "/processes/{key}/migrations/{id}", "viewer",
     "One migration with each instance's outcome and reasons", None),
    ("post", "/processes/{key}/migrations/{id}/revert", "admin",
     "Put back the moved instances that have not moved on since", None),
    ("post", "/tasks/bulk", "operator",
     "One action for many inbox tasks, reported per task (200 / 409 / 404)",
     {"$ref": "#/components/schemas/BulkTaskAction"}),
]
OPENAPI_SCHEMAS: dict[str, Any] = {
    "MigrationRequest": {"type": "object", "required": ["from", "to"], "properties": {
        "from": {"type": "integer", "minimum": 1}, "to": {"type": "integer", "minimum": 1},
        "dry_run": {"type": "boolean", "default": True}}},
    "BulkTaskAction": {"type": "object", "required": ["ids", "action"], "properties": {
        "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1,
                "maxItems": bulk.MAX_TASKS},
        "action": {"type": "string", "enum": ["retry", "alternative", "abort"]},
        "comment": {"type": "string", "maxLength": 2000}}},
}


@bp.get("/processes/<key>/versions")
@require("viewer")
def list_versions(key: str) -> Response:
    return jsonify(migration.versions(key))


@bp.get("/processes/<key>/diff")
@require("viewer")
def diff_versions(key: str) -> Response:
    return jsonify(migration.diff(key, migration.version_number(request.args.get("from"), "from"),
                                  migration.version_number(request.args.get("to"), "to")))


@bp.get("/processes/<key>/migrations")
@require("viewer")
def list_migrations(key: str) -> Response:
    return jsonify(migration.listing(key))


@bp.get("/processes/<key>/migrations/<int:migration_id>")
@require("viewer")
def get_migration(key: str, migration_id: int) -> Response:
    return jsonify(migration.describe(migration.get(key, migration_id), with_items=True))


@bp.post("/processes/<key>/migrations")
@require("admin")
def migrate_instances(key: str) -> Response:
    """`{from, to, dry_run}`; dry_run defaults to true, so only an explicit false moves."""
    source, target, dry = migration.request_of(body())
    if dry:
        try:
            return jsonify(migration.dry_run(key, source, target))
        finally:
            db.session.rollback()  # a read: never keep a transaction open
    with unit_of_work():
        run = migration.migrate(key, source, target, actor=actor())
        out = migration.describe(run, with_items=True)
    return created(out)


@bp.post("/processes/<key>/migrations/<int:migration_id>/revert")
@require("admin")
def revert_migration(key: str, migration_id: int) -> Response:
    with unit_of_work():
        run = migration.revert(key, migration_id, actor=actor())
        out = migration.describe(run, with_items=True)
    return jsonify(out)


@bp.post("/tasks/bulk")
@require("operator")
def bulk_complete() -> Response:
    wanted = bulk.request_of(body())
    results = []
    for task_id in wanted.ids:
        error: LeaseflowError | None = None
        try:
            with unit_of_work():
                bulk.complete_one(task_id, wanted, user=actor())
        except LeaseflowError as exc:
            error = exc
        try:
            results.append(bulk.report(task_id, error))
        finally:
            db.session.rollback()  # end the read before the next task's transaction
    summary = {str(code): sum(1 for r in results if r["status"] == code)
               for code in sorted({r["status"] for r in results})}
    return jsonify({"action": wanted.action, "summary": summary, "tasks": results})
