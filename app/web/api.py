"""The REST API, `/api/v1` (SPEC §5). Views parse input, call one service, render JSON.

Mutating views run in a unit of work, which commits and then dispatches jobs.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import operations
from ..errors import Conflict, Invalid, LeaseflowError
from ..extensions import db
from ..services import definitions, instances, leases, subnets
from ..services.dispatch import WAITERS
from ..services.uow import unit_of_work
from .auth import actor, require

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def body() -> dict[str, Any]:
    if not request.data:
        raise Invalid("a JSON object body is required", code="invalid_request")
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise LeaseflowError("the body is not valid JSON", code="malformed_json", status=400)
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", code="invalid_request")
    return data


def int_arg(name: str, default: int, *, low: int = 0, high: int = 10_000) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be a whole number", code="invalid_request",
                      details=[{"field": name}]) from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}", code="invalid_request",
                      details=[{"field": name}])
    return value


def created(payload: Any, status: int = 201) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response


# --- subnets -------------------------------------------------------------------------------


@bp.get("/subnets")
@require("viewer")
def list_subnets() -> Response:
    return jsonify([subnets.describe(s, with_usage=True) for s in subnets.all_subnets()])


@bp.post("/subnets")
@require("admin")
def create_subnet() -> Response:
    data = body()
    with unit_of_work():
        subnet = subnets.create(data, actor=actor())
        out = subnets.describe(subnet, with_usage=True)
    return created(out)


@bp.get("/subnets/<int:subnet_id>")
@require("viewer")
def get_subnet(subnet_id: int) -> Response:
    return jsonify(subnets.describe(subnets.get(subnet_id), with_usage=True))


@bp.patch("/subnets/<int:subnet_id>")
@require("admin")
def update_subnet(subnet_id: int) -> Response:
    data = body()
    with unit_of_work():
        out = subnets.describe(subnets.update(subnet_id, data, actor=actor()), with_usage=True)
    return jsonify(out)


@bp.delete("/subnets/<int:subnet_id>")
@require("admin")
def delete_subnet(subnet_id: int) -> Response:
    with unit_of_work():
        subnets.delete(subnet_id, actor=actor())
    return created({"deleted": subnet_id}, 200)


# --- leases --------------------------------------------------------------------------------


def _lease_outcome(instance_id: int) -> tuple[bool, dict[str, Any]]:
    """Has the request settled (bound, refused, waiting for a person)? And what to say."""
    db.session.expire_all()
    instance = instances.get(instance_id)
    if instance.state in instances.FINAL:
        return True, {"instance": instances.describe(instance)}
    if instance.lease_id is not None:
        lease = leases.get_lease(instance.lease_id)
        if lease.state == "bound":
            return True, {"instance": instances.describe(instance),
                          "lease": leases.describe(lease)}
    from ..models import HumanTask

    waiting_person = db.session.query(HumanTask.id).filter_by(
        instance_id=instance_id, state="open").first()
    if waiting_person is not None:
        return True, {"instance": instances.describe(instance), "task_id": waiting_person[0]}
    return False, {"instance": instances.describe(instance)}


@bp.post("/leases")
@require("operator")
def request_lease() -> Response:
    data = body()
    wait = request.args.get("wait")
    seconds = 0.0
    if wait is not None:
        try:
            seconds = float(wait)
        except ValueError:
            raise Invalid("wait must be a number of seconds", code="invalid_request",
                          details=[{"field": "wait"}]) from None
        if not 0 <= seconds <= 300:
            raise Invalid("wait must be between 0 and 300 seconds", code="invalid_request",
                          details=[{"field": "wait"}])
    intake = current_app.extensions.get("leaseflow_intake")
    if intake is not None:
        instance_id = intake.submit(data, actor())  # group commit with concurrent requests
    else:
        with unit_of_work():
            instance_id = instances.start_lease(data, actor=actor())
    accepted = {"instance_id": instance_id, "state": "pending",
                "links": {"instance": f"/api/v1/instances/{instance_id}"}}
    if seconds <= 0:
        return created(accepted, 202)
    result: dict[str, Any] = {}

    def settled() -> bool:
        try:
            done, payload = _lease_outcome(instance_id)
        finally:
            db.session.rollback()  # end the read: never hold a transaction while waiting
        result.update(payload)
        return done

    if not WAITERS.wait(instance_id, settled, seconds):
        return created({**accepted, **result}, 202)
    if "lease" in result:
        return created({**result["lease"], "instance_id": instance_id}, 201)
    outcome = result["instance"].get("outcome") or {}
    if "task_id" in result:
        return created({**accepted, "state": "manual_retry", "task_id": result["task_id"]},
                       202)
    raise Conflict(outcome.get("message") or "the lease request was refused",
                   code=outcome.get("reason") or "refused",
                   details=[{"instance_id": instance_id, **outcome}])


@bp.get("/leases")
@require("viewer")
def search_leases() -> Response:
    found = leases.search(ip=request.args.get("ip"), client_id=request.args.get("client_id"),
                          owner=request.args.get("owner"), state=request.args.get("state"),
                          subnet=request.args.get("subnet"),
                          limit=int_arg("limit", 500, low=1, high=5000),
                          offset=int_arg("offset", 0, high=10**9))
    return jsonify([leases.describe(lease) for lease in found])


@bp.get("/leases/<ip>")
@require("viewer")
def get_lease(ip: str) -> Response:
    return jsonify(leases.describe(leases.latest_for_ip(ip), with_history=True))


@bp.delete("/leases/<ip>")
@require("operator")
def release_lease(ip: str) -> Response:
    with unit_of_work():
        lease = leases.find_holding(ip, request.args.get("subnet"))
        if lease.instance_id is None:
            leases.release(lease.id, reason="release", actor=actor())
            return created({"ip": ip, "state": "released"}, 200)
        instance = instances.get(lease.instance_id)
        try:
            instances.send_message(instance.id, "lease_release", {"by": actor()},
                                   actor=actor())
        except Conflict:
            # Not yet bound (still reserving): give the address back directly.
            leases.release(lease.id, reason="release", actor=actor())
            return created({"ip": ip, "state": "released"}, 200)
    return created({"ip": ip, "state": "releasing", "instance_id": lease.instance_id}, 202)


# --- processes, instances, tasks, operations -----------------------------------------------


@bp.get("/operations")
@require("viewer")
def list_operations() -> Response:
    return jsonify(operations.catalogue())


@bp.get("/processes")
@require("viewer")
def list_processes() -> Response:
    return jsonify(definitions.listing())


@bp.post("/processes")
@require("admin")
def upload_process() -> Response:
    upload = request.files.get("file")
    xml = upload.read() if upload is not None else request.get_data()
    if not xml:
        raise Invalid("send a .bpmn file (multipart field 'file') or the XML as the body",
                      code="invalid_request")
    activate = request.args.get("deploy", "false").lower() in ("1", "true", "yes")
    with unit_of_work():
        definition = definitions.upload(xml, author=actor(), activate=activate)
        out = definitions.describe(definition)
    return created(out)


@bp.get("/processes/<key>/versions/<int:version>")
@require("viewer")
def get_process_version(key: str, version: int) -> Response:
    row = definitions.get_version(key, version)
    return Response(row.xml, mimetype="application/xml")


@bp.post("/processes/<key>/versions/<int:version>/deploy")
@require("admin")
def deploy_process(key: str, version: int) -> Response:
    with unit_of_work():
        out = definitions.describe(definitions.deploy(key, version, actor=actor()))
    return jsonify(out)


@bp.get("/instances")
@require("viewer")
def list_instances() -> Response:
    found = instances.search(state=request.args.get("state"),
                             process=request.args.get("process"),
                             limit=int_arg("limit", 200, low=1, high=5000))
    return jsonify([instances.describe(i) for i in found])


@bp.get("/instances/<int:instance_id>")
@require("viewer")
def get_instance(instance_id: int) -> Response:
    return jsonify(instances.describe(instances.get(instance_id), with_tasks=True))


@bp.get("/tasks")
@require("viewer")
def list_tasks() -> Response:
    state = request.args.get("state", "open")
    return jsonify([instances.describe_task(t) for t in instances.open_tasks(state)])


@bp.post("/tasks/<int:task_id>/complete")
@require("operator")
def complete_task(task_id: int) -> Response:
    data = body()
    with unit_of_work():
        task = instances.complete_task(task_id, action=data.get("action"),
                                       comment=data.get("comment"), user=actor())
        out = instances.describe_task(task)
    return jsonify(out)

