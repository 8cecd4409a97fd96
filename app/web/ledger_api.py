"""The ledger endpoints of `/api/v1`: verify, anchor now, and a lease's proof export.

Thin views: parse, call one service, render. Anchoring writes, so it runs in a unit of work.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..chain import ChainError
from ..operations.chain_ops import operation_error
from ..services import anchoring, ledger
from ..services.uow import unit_of_work
from .auth import require

bp = Blueprint("ledger_api", __name__, url_prefix="/api/v1")


@bp.get("/ledger/verify")
@require("viewer")
def verify() -> Response:
    return jsonify(ledger.verify())


@bp.post("/ledger/anchor")
@require("admin")
def anchor() -> Response:
    try:
        with unit_of_work():
            result = anchoring.anchor_now()
    except ChainError as exc:  # node down (503) or a contract problem (409), as JSON
        problem = operation_error(exc, "anchoring the ledger")
        response = jsonify({"error": problem.code, "message": problem.message, "details": []})
        response.status_code = 503 if problem.kind == "transient" else 409
        return response
    return jsonify(result)


@bp.get("/leases/<ip>/proof")
@require("viewer")
def lease_proof(ip: str) -> Response:
    return jsonify(ledger.proof(ip))
