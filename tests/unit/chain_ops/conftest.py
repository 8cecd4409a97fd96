"""Fixtures of the chain-operation tests: the default process on the embedded chain.

`app`, `client` and `admin` come from the root conftest (a fresh SQLite database and the
in-process worker); every test gets its own LeaseRegistry because the contract address is
kept per database. The chain service's batchers are closed after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

CIDR = "10.9.0.0/24"
POOL = ["10.9.0.10-10.9.0.14"]


@pytest.fixture(autouse=True)
def _close_chain_services() -> Iterator[None]:
    yield
    from app.services import chain

    chain.reset()


@pytest.fixture
def subnet(client: FlaskClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/subnets", json={"cidr": CIDR, "pools": POOL,
                                                     "lease_time": 600}, headers=admin)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def registry(app: Flask) -> Any:
    """The LeaseRegistry the app uses (deployed on first use, address kept in settings)."""
    from app.services import chain

    with app.app_context():
        return chain.get().registry
