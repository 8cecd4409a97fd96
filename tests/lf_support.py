"""Helpers shared by the test suites (imported as `lf_support`; fixtures stay in conftest)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-" + uuid.uuid4().hex


def make_app(tmp_path: Path, **overrides: Any) -> Flask:
    from app import create_app
    from app.config import Settings
    from app.extensions import db
    from app.services import setup

    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'leaseflow.db'}",
                              "broker_url": "memory://", "api_token": TOKEN,
                              "admin_password": "admin-secret", "secret_key": "test",
                              "tick_interval": 0.05}
    values.update(overrides)
    settings = Settings.from_env(environ={}, **values)
    app = create_app(settings=settings)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        setup.bootstrap()
        db.session.remove()
    return app




@contextlib.contextmanager
def running_app(tmp_path: Path, **overrides: Any) -> Iterator[Flask]:
    """`make_app` with its transport started (the in-process worker); afterwards the
    transport is uninstalled and the engine's connections are closed."""
    from app import start_transport
    from app.extensions import db
    from app.services import dispatch

    application = make_app(tmp_path, **overrides)
    start_transport(application)
    try:
        yield application
    finally:
        dispatch.install(None)
        with application.app_context():
            db.engine.dispose()


def pg_url() -> str:
    return os.environ.get("LEASEFLOW_TEST_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def redis_url() -> str:
    return os.environ.get("LEASEFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def settle(predicate: Any, timeout: float, what: str) -> None:
    """Re-check `predicate` until it holds or `timeout` passes (bounded; fails loudly)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s")
        tick.wait(0.25)


BPMN_CASES = Path(__file__).resolve().parent / "data" / "bpmn"


def read_case(name: str) -> bytes:
    """tests/data/bpmn/<name>/process.bpmn (importable from any test directory: a test
    module's `from conftest import ...` finds whichever conftest comes first on sys.path)."""
    return (BPMN_CASES / name / "process.bpmn").read_bytes()


def bpmn_cases() -> list[tuple[str, bytes, dict[str, object]]]:
    """(case name, file bytes, expected) for every directory under tests/data/bpmn."""
    import json

    cases = []
    for case in sorted(p for p in BPMN_CASES.iterdir() if p.is_dir()):
        expected = json.loads((case / "expected.json").read_text())
        cases.append((case.name, (case / "process.bpmn").read_bytes(), expected))
    return cases


def read_until(proc: subprocess.Popen[bytes], prefix: str, timeout: float) -> str:
    """The first stdout line starting with `prefix` (bounded: a hung start fails the test)."""
    import selectors

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline().decode()
            if not line or line.startswith(prefix):
                return line
    return ""


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> str:
    """Stop `proc` with `sig` (killed if it does not end); what it printed meanwhile.

    `leaseflow up` gets SIGINT: it ends its web server on KeyboardInterrupt, while its
    SIGTERM handler calls shutdown() from the serving thread itself, which never returns
    (reported to the lead).
    """
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return (out or b"").decode()


class BenchTarget:
    """A `bench.dhcp` target that runs nothing (a fake perfdhcp says what it completed, up
    to `capacity` exchanges a second): its CPU meter reads this test's own process."""

    name = "Kea 2.2 (memfile, 1 thread)"
    uses_postgres = False

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def server_pids(self) -> list[int]:
        return [os.getpid()]

    def start(self) -> None: ...

    def fresh(self) -> None: ...

    def settle(self) -> None: ...

    def stop(self) -> None: ...
