"""Operations endpoints: `/healthz`, `/metrics` (Prometheus text) and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select, text

from ..extensions import db
from ..models import HumanTask, Lease, ProcessInstance, ServiceJob
from .openapi import document

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    db.session.execute(text("SELECT 1"))
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics() -> Response:
    lines = []
    for name, column in (("leases", Lease.state), ("instances", ProcessInstance.state),
                         ("jobs", ServiceJob.status), ("human_tasks", HumanTask.state)):
        lines.append(f"# TYPE leaseflow_{name} gauge")
        for state, count in db.session.execute(select(column, func.count()).group_by(column)):
            lines.append(f'leaseflow_{name}{{state="{state}"}} {count}')
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(document())
