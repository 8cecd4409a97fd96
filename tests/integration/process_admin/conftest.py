"""The process-admin harness of tests/unit/process_admin on PostgreSQL.

The flaky test operation, the hand-driven engine and the role fixtures are the unit suite's
(loaded from its conftest by path, since test directories are not packages); only `app`
differs: a fresh PostgreSQL database, so row locks and types are the production ones.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from lf_support import make_app

_path = Path(__file__).resolve().parents[2] / "unit" / "process_admin" / "conftest.py"
_spec = importlib.util.spec_from_file_location("process_admin_unit_harness", _path)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness  # dataclasses look their module up while being built
_spec.loader.exec_module(harness)

flaky = harness.flaky
engine = harness.engine
subnet = harness.subnet
deploy = harness.deploy
v1 = harness.v1
request_lease = harness.request_lease


@pytest.fixture
def app(tmp_path: Path, pg_database: str) -> Iterator[Flask]:
    from app.extensions import db
    from app.services import definitions, dispatch, instances

    definitions._specs.clear()  # keyed by row id: see the unit harness
    instances._cache.clear()
    application = make_app(tmp_path, database_url=pg_database)
    transport = harness.RecordingTransport()
    dispatch.install(transport)
    application.extensions["test_transport"] = transport
    yield application
    dispatch.install(None)
    with application.app_context():
        db.engine.dispose()
