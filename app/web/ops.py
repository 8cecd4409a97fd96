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
    lines += _dhcp_lines()
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


def _dhcp_lines() -> list[str]:
    """Packet counters of the DHCP servers running in this process (`leaseflow up` with
    LEASEFLOW_DHCP_INTERFACE, or `leaseflow dhcp`); none when no server runs here."""
    from ..dhcp.process_backend import running_counters

    servers = running_counters()
    if not servers:
        return []
    lines = ["# TYPE leaseflow_dhcp_packets_total counter"]
    for interface, counters in sorted(servers.items()):
        for event, value in sorted(counters.items()):
            lines.append(f'leaseflow_dhcp_packets_total{{interface="{interface}",'
                         f'event="{event}"}} {value}')
    return lines


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(document())
