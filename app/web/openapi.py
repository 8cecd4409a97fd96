"""The OpenAPI 3.1 document of `/api/v1`, built from one table of routes."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ROUTES: list[tuple[str, str, str, str, dict[str, Any] | None]] = [
    # (method, path, role, summary, request body schema)
    ("get", "/subnets", "viewer", "Subnets with pools and utilization", None),
    ("post", "/subnets", "admin", "Create a subnet", {"$ref": "#/components/schemas/Subnet"}),
    ("get", "/subnets/{id}", "viewer", "One subnet", None),
    ("patch", "/subnets/{id}", "admin", "Change pools, options or lease time",
     {"$ref": "#/components/schemas/Subnet"}),
    ("delete", "/subnets/{id}", "admin", "Delete a subnet without held leases", None),
    ("post", "/leases", "operator", "Start a lease process (202), or wait for it (?wait=S)",
     {"$ref": "#/components/schemas/LeaseRequest"}),
    ("get", "/leases", "viewer", "Search leases by ip, client_id, owner, state, subnet", None),
    ("get", "/leases/{ip}", "viewer", "One lease with its history", None),
    ("delete", "/leases/{ip}", "operator", "Release a lease", None),
    ("get", "/operations", "viewer", "Service-task operations with parameter schemas", None),
    ("get", "/processes", "viewer", "Process definitions and versions", None),
    ("post", "/processes", "admin", "Upload a BPMN file (validated; 422 lists problems)", None),
    ("get", "/processes/{key}/versions/{n}", "viewer", "The XML of one version", None),
    ("post", "/processes/{key}/versions/{n}/deploy", "admin", "Make a version active", None),
    ("get", "/instances", "viewer", "Process instances (?state=&process=)", None),
    ("get", "/instances/{id}", "viewer", "One instance with task states and jobs", None),
    ("get", "/tasks", "viewer", "Human tasks (?state=open)", None),
    ("post", "/tasks/{id}/complete", "operator", "Retry, alternative address or abort",
     {"$ref": "#/components/schemas/TaskCompletion"}),
    ("get", "/ledger/verify", "viewer", "Recompute the audit hash chain against the anchors",
     None),
    ("post", "/ledger/anchor", "admin", "Anchor the ledger's new rows on the chain now", None),
    ("get", "/leases/{ip}/proof", "viewer", "A lease's ledger rows with their Merkle path",
     None),
]

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message", "details"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {}}}},
    "Subnet": {"type": "object", "properties": {
        "cidr": {"type": "string", "example": "10.0.0.0/24"},
        "pools": {"type": "array", "items": {"type": "string", "example": "10.0.0.10-10.0.0.200"}},
        "gateway": {"type": "string"}, "dns": {"type": "array", "items": {"type": "string"}},
        "excluded": {"type": "array", "items": {"type": "string"}},
        "lease_time": {"type": "integer", "minimum": 60}, "name": {"type": "string"}}},
    "LeaseRequest": {"type": "object", "required": ["subnet", "client_id"], "properties": {
        "subnet": {"type": "string"}, "client_id": {"type": "string"},
        "hostname": {"type": "string"}, "owner": {"type": "string"},
        "hwaddr": {"type": "string"}, "requested_ip": {"type": "string"}}},
    "TaskCompletion": {"type": "object", "required": ["action"], "properties": {
        "action": {"enum": ["retry", "alternative", "abort"]}, "comment": {"type": "string"}}},
}


def document() -> dict[str, Any]:
    from .admin_api import OPENAPI_ROUTES, OPENAPI_SCHEMAS

    paths: dict[str, Any] = {}
    for method, path, role, summary, schema in [*ROUTES, *OPENAPI_ROUTES]:
        op: dict[str, Any] = {
            "summary": summary, "x-required-role": role,
            "responses": {"200": {"description": "OK"},
                          **{str(code): {"description": "error",
                                         "content": {"application/json": {"schema": ERROR}}}
                             for code in (400, 401, 403, 404, 409, 422)}}}
        if schema is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": schema}}}
        paths.setdefault("/api/v1" + path, {})[method] = op
    return {"openapi": "3.1.0",
            "info": {"title": "Leaseflow API", "version": "1"},
            "components": {"schemas": {**SCHEMAS, **OPENAPI_SCHEMAS}, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
            "paths": paths}
