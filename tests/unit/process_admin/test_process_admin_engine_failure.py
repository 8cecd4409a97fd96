"""An engine error in a later step of a worker's transaction fails the instance for good.

The worker starts an instance (engine.start), runs its reservation ahead in the same
transaction, and only then does the diagram's expression for the next task fail. The
instance must end `failed` with the reason: the first step's pending write (state
`waiting`, the stepped workflow) must not overwrite the failure when the unit of work ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

DATA = Path(__file__).resolve().parents[2] / "data" / "process_admin"


def test_a_failing_expression_after_a_run_ahead_step_ends_the_instance_failed(
        client: FlaskClient, admin: dict[str, str], subnet: dict[str, Any],
        request_lease: Callable[[str], int]) -> None:
    # flaky_v1, except that the commit's parameter reads a key the reservation lacks
    xml = (DATA / "flaky_v1.bpmn").read_text()
    broken = xml.replace("value=\"reservation['lease_id']\"", "value=\"reservation['nope']\"")
    assert broken != xml
    response = client.post("/api/v1/processes?deploy=true", data=broken.encode(),
                           content_type="application/xml", headers=admin)
    assert response.status_code == 201, response.json

    instance_id = request_lease("host-x")

    body = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
    assert body["state"] == "failed", body
    assert body["outcome"]["reason"] == "engine_error"
    assert "nope" in body["outcome"]["message"]
