"""Fixtures of the process-admin tests: a test-only operation and an engine driven by hand.

`flaky` is the operation `test.flaky_commit`, registered from test code: it fails with a
TransientError while `failures_left` is above zero, then commits the lease like `dhcp.commit`.
The BPMN files under tests/data/process_admin use it in place of `dhcp.commit`.

`app` here overrides the shared one: committed jobs are recorded instead of run by a
background worker, and `engine` runs them (and the ticker) when the test says so, through the
same `workers.jobs` edge a worker uses. Nothing waits on a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import operations
from lf_support import make_app

DATA = Path(__file__).resolve().parents[2] / "data" / "process_admin"
SUBNET = {"cidr": "10.77.0.0/24", "pools": ["10.77.0.10-10.77.0.29"], "gateway": "10.77.0.1",
          "lease_time": 600}


@dataclass
class Flaky:
    failures_left: int = 0
    calls: int = 0


@pytest.fixture(autouse=True)
def flaky() -> Iterator[Flaky]:
    state = Flaky()

    @operations.register("test.flaky_commit", description="dhcp.commit that fails on demand",
                         params={"lease_id": "int"}, required={"lease_id"})
    def flaky_commit(params: Mapping[str, Any]) -> dict[str, Any]:
        from app.ipam.addresses import int_to_ip
        from app.operations.dhcp_ops import commit
        from app.services import leases

        state.calls += 1
        if state.failures_left > 0:
            state.failures_left -= 1
            lease = leases.get_lease(params["lease_id"])
            raise operations.TransientError("the DHCP peer did not answer", code="peer_down",
                                            details={"ip": int_to_ip(lease.address)})
        return commit(params)  # type: ignore[return-value]

    yield state
    operations.REGISTRY.pop("test.flaky_commit", None)


class RecordingTransport:
    """Keeps committed job ids for the test to run; tells waiters about changes at once."""

    def __init__(self) -> None:
        self.jobs: list[int] = []

    def send(self, job_ids: list[int]) -> None:
        self.jobs.extend(job_ids)

    def notify(self, instance_ids: list[int]) -> None:
        from app.services.dispatch import WAITERS

        WAITERS.changed(instance_ids)

    def close(self) -> None:
        self.jobs.clear()


@dataclass
class Engine:
    app: Flask
    transport: RecordingTransport
    rounds: list[dict[str, int]] = field(default_factory=list)

    def run(self) -> None:
        """Run every recorded job and what those jobs lead to (bounded, never a busy loop)."""
        from workers.jobs import run_jobs

        with self.app.app_context():
            for _ in range(50):
                if not self.transport.jobs:
                    return
                ids, self.transport.jobs = self.transport.jobs, []
                self.rounds.append(run_jobs(ids))
        pytest.fail("jobs kept coming after 50 rounds")

    def tick(self) -> dict[str, int]:
        """One round of the ticker (re-queue due jobs, wake due timers), then run the jobs."""
        from workers.jobs import tick

        with self.app.app_context():
            stats = tick()
        self.run()
        return stats

    def make_jobs_due(self) -> None:
        """Let the backoff delays of queued jobs be over, as if their time had come."""
        from sqlalchemy import update

        from app.extensions import db
        from app.models import ServiceJob, utcnow

        past = utcnow() - timedelta(seconds=1)
        with self.app.app_context():
            db.session.execute(update(ServiceJob).where(ServiceJob.status == "queued")
                               .values(not_before=past, deadline=past))
            db.session.commit()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    from app.services import definitions, dispatch, instances

    # Both caches are keyed by row id and outlive an app: another test's database has other
    # rows under the same ids (instance 1 at version 3, definition 2), so start clean.
    definitions._specs.clear()
    instances._cache.clear()
    application = make_app(tmp_path)
    transport = RecordingTransport()
    dispatch.install(transport)
    application.extensions["test_transport"] = transport
    yield application
    dispatch.install(None)


@pytest.fixture
def engine(app: Flask) -> Engine:
    return Engine(app=app, transport=app.extensions["test_transport"])


@pytest.fixture
def subnet(client: FlaskClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/subnets", json=SUBNET, headers=admin)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


@pytest.fixture
def deploy(client: FlaskClient, admin: dict[str, str]) -> Callable[..., int]:
    """Upload tests/data/process_admin/<name>.bpmn through the gate; its version number."""

    def upload(name: str, *, activate: bool = True) -> int:
        response = client.post(f"/api/v1/processes?deploy={'true' if activate else 'false'}",
                               data=(DATA / f"{name}.bpmn").read_bytes(),
                               content_type="application/xml", headers=admin)
        assert response.status_code == 201, response.json
        return int(response.json["version"])

    return upload


@pytest.fixture
def v1(deploy: Callable[..., int], subnet: dict[str, Any]) -> int:
    """The flaky lease lifecycle, deployed as the active version."""
    return deploy("flaky_v1")


@pytest.fixture
def request_lease(client: FlaskClient, admin: dict[str, str],
                  engine: Engine) -> Callable[[str], int]:
    """Ask for a lease through the API and run its jobs; the instance id."""

    def start(client_id: str) -> int:
        response = client.post("/api/v1/leases", json={"subnet": SUBNET["cidr"],
                                                       "client_id": client_id}, headers=admin)
        assert response.status_code == 202, response.json
        engine.run()
        return int(response.json["instance_id"])

    return start
