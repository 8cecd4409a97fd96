"""An engine error in a later step of a worker's transaction fails the instance for good.

The worker starts an instance (engine.start), runs its reservation ahead in the same
transaction, and only then does the diagram's expression for the next task fail. The
instance must end `failed` with the reason: the first step's pending write (state
`waiting`, the stepped workflow) must not overwrite the failure when the unit of work ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient


def test_a_failing_expression_after_a_run_ahead_step_ends_the_instance_failed(
        client: FlaskClient, admin: dict[str, str], deploy: Callable[..., int],
        subnet: dict[str, Any], request_lease: Callable[[str], int]) -> None:
    deploy("fails_after_reserve")
    instance_id = request_lease("host-x")
    body = client.get(f"/api/v1/instances/{instance_id}", headers=admin).json
    assert body["state"] == "failed", body
    assert body["outcome"]["reason"] == "engine_error"
    assert "no_such_key" in body["outcome"]["message"]
