"""The REST API on the embedded default (SQLite + in-process worker)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

SUBNET = {"cidr": "10.9.0.0/24", "pools": ["10.9.0.10-10.9.0.14"], "gateway": "10.9.0.1",
          "dns": ["10.9.0.1"], "lease_time": 600}


@pytest.fixture
def subnet(client: FlaskClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/subnets", json=SUBNET, headers=admin)
    assert response.status_code == 201, response.json
    return response.json


def lease(client: FlaskClient, admin: dict[str, str], client_id: str, **extra: Any) -> Any:
    return client.post("/api/v1/leases?wait=20",
                       json={"subnet": SUBNET["cidr"], "client_id": client_id, **extra},
                       headers=admin)


def test_missing_or_wrong_token_is_401(client: FlaskClient) -> None:
    assert client.get("/api/v1/subnets").status_code == 401
    response = client.get("/api/v1/subnets", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"


@pytest.mark.parametrize(("payload", "status", "field"), [
    ({"cidr": "10.1.0.1/24", "pools": ["10.1.0.10-10.1.0.20"]}, 422, "cidr"),
    ({"cidr": "10.1.0.0/24", "pools": ["10.2.0.10-10.2.0.20"]}, 422, "pool"),
    ({"cidr": "10.1.0.0/24"}, 422, "pool"),
    ({"cidr": "10.1.0.0/24", "pools": ["10.1.0.10-10.1.0.20"], "lease_time": "x"}, 422,
     "lease_time"),
    ({"cidr": "10.9.0.0/16", "pools": ["10.9.1.10-10.9.1.20"]}, 409, "cidr"),
])
def test_bad_subnets_name_the_field(client: FlaskClient, admin: dict[str, str],
                                    subnet: dict[str, Any], payload: dict[str, Any],
                                    status: int, field: str) -> None:
    response = client.post("/api/v1/subnets", json=payload, headers=admin)
    assert response.status_code == status
    assert response.json["details"][0]["field"] == field


def test_malformed_json_is_400(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post("/api/v1/subnets", data="{nope", headers=admin,
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"] == "malformed_json"


def test_lease_request_binds_and_release_frees(client: FlaskClient, admin: dict[str, str],
                                               subnet: dict[str, Any]) -> None:
    response = lease(client, admin, "host-a", hostname="a")
    assert response.status_code == 201, response.json
    bound = response.json
    assert bound["state"] == "bound" and bound["ip"].startswith("10.9.0.1")
    detail = client.get(f"/api/v1/leases/{bound['ip']}", headers=admin).json
    assert [h["event"] for h in detail["history"]] == ["reserve", "commit"]
    instance = client.get(f"/api/v1/instances/{bound['instance_id']}", headers=admin).json
    assert instance["state"] == "waiting"
    assert {"element": "await", "state": "WAITING"} in instance["tasks"]
    response = client.delete(f"/api/v1/leases/{bound['ip']}", headers=admin)
    assert response.status_code == 202
    # the release runs in the worker; wait for the instance to end through the API's own wait
    from app.services.dispatch import WAITERS

    def released() -> bool:
        return client.get(f"/api/v1/instances/{bound['instance_id']}",
                          headers=admin).json["state"] == "completed"

    assert WAITERS.wait(bound["instance_id"], released, 20)
    assert client.get(f"/api/v1/leases/{bound['ip']}", headers=admin).json["state"] == "released"


def test_requested_address_is_honoured(client: FlaskClient, admin: dict[str, str],
                                       subnet: dict[str, Any]) -> None:
    response = lease(client, admin, "host-r", requested_ip="10.9.0.13")
    assert response.status_code == 201 and response.json["ip"] == "10.9.0.13"


def test_exhausted_pool_is_a_clear_refusal(client: FlaskClient, admin: dict[str, str],
                                          subnet: dict[str, Any]) -> None:
    ips = {lease(client, admin, f"host-{i}").json["ip"] for i in range(5)}
    assert len(ips) == 5
    response = lease(client, admin, "host-late")
    assert response.status_code == 409
    assert response.json["error"] == "pool_exhausted"
    instance_id = response.json["details"][0]["instance_id"]
    instance = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
    assert instance["state"] == "refused"


@pytest.mark.parametrize(("payload", "status", "field"), [
    ({"client_id": "x"}, 422, "subnet"),
    ({"subnet": "10.99.0.0/24", "client_id": "x"}, 422, "subnet"),
    ({"subnet": "10.9.0.0/24"}, 422, "client_id"),
    ({"subnet": "10.9.0.0/24", "client_id": 5}, 422, "client_id"),
    ({"subnet": "10.9.0.0/24", "client_id": "x", "requested_ip": "nope"}, 422, "requested_ip"),
    ({"subnet": "10.9.0.0/24", "client_id": "x", "colour": "red"}, 422, "colour"),
])
def test_bad_lease_requests(client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
                            payload: dict[str, Any], status: int, field: str) -> None:
    response = client.post("/api/v1/leases", json=payload, headers=admin)
    assert response.status_code == status
    assert response.json["details"][0]["field"] == field
    assert client.get("/api/v1/instances", headers=admin).json == []


def test_operations_catalogue_and_openapi(client: FlaskClient, admin: dict[str, str]) -> None:
    names = {op["name"] for op in client.get("/api/v1/operations", headers=admin).json}
    assert {"ipam.reserve", "ipam.release", "ledger.append", "dhcp.commit"} <= names
    doc = client.get("/api/v1/openapi.json").json
    assert "/api/v1/leases" in doc["paths"] and doc["openapi"].startswith("3.")


def test_search_and_unknown_lease(client: FlaskClient, admin: dict[str, str],
                                  subnet: dict[str, Any]) -> None:
    ip = lease(client, admin, "host-s", owner="pod:default/web").json["ip"]
    found = client.get("/api/v1/leases?owner=pod:default/web", headers=admin).json
    assert [f["ip"] for f in found] == [ip]
    assert client.get("/api/v1/leases?state=weird", headers=admin).status_code == 422
    assert client.get("/api/v1/leases/10.9.0.99", headers=admin).status_code == 404
    assert client.get("/api/v1/leases/not-an-ip", headers=admin).status_code == 422


def test_openapi_lists_every_api_route(app: Any) -> None:
    """The OpenAPI document and the routes the app serves agree."""
    import re

    from app.web.openapi import document

    documented = {(m.upper(), p) for p, ops in document()["paths"].items() for m in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.endswith("openapi.json"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + m.group(1) + "}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    normalize = lambda pairs: {(m, re.sub(r"\{\w+\}", "{}", p)) for m, p in pairs}  # noqa: E731
    assert normalize(served) - normalize(documented) == set()
