"""Fixtures for the process-driven DHCP backend: the embedded app (SQLite + in-process
worker, the root `app` fixture) with one subnet, its `SubnetConfig`, and clients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from app.dhcp.backend import Client
from app.dhcp.config import SubnetConfig
from app.dhcp.process_backend import ProcessLeaseBackend

CIDR = "10.66.0.0/24"
POOL = ("10.66.0.10", "10.66.0.14")
LEASE_TIME = 600


def with_subnet(app: Flask) -> Flask:
    from app.services import subnets
    from app.services.uow import unit_of_work

    with app.app_context(), unit_of_work():
        subnets.create({"cidr": CIDR, "pools": [f"{POOL[0]}-{POOL[1]}"],
                        "gateway": "10.66.0.1", "lease_time": LEASE_TIME}, actor="test")
    return app


@pytest.fixture
def add_subnet() -> Callable[[Flask], Flask]:
    """`with_subnet`, for a test module that builds its own app."""
    return with_subnet


@pytest.fixture
def dhcp_app(app: Flask) -> Flask:
    return with_subnet(app)


@pytest.fixture
def subnet_config() -> SubnetConfig:
    return SubnetConfig(cidr=CIDR, pool=POOL, gateway="10.66.0.1", lease_time=LEASE_TIME)


@pytest.fixture
def backend(dhcp_app: Flask) -> ProcessLeaseBackend:
    # Generous patience: a slow CI machine must not turn into a silent server here.
    return ProcessLeaseBackend(dhcp_app, patience=20.0, offer_lifetime=30.0)


@pytest.fixture
def make_client(subnet_config: SubnetConfig) -> Callable[[int], Client]:
    def make(n: int, subnet: SubnetConfig | None = None) -> Client:
        mac = bytes((0x02, 0, 0, 0, 0, n))
        return Client(subnet=subnet or subnet_config, client_id=b"\x01" + mac, chaddr=mac,
                      hostname=f"host-{n}")
    return make
