"""The command line: one clear line on stderr and a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def leaseflow(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LEASEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
           "LEASEFLOW_SECRET_KEY": "k", "LEASEFLOW_ADMIN_PASSWORD": "p",
           "LEASEFLOW_API_TOKEN": "t", "PYTHONPATH": str(ROOT), **settings}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    assert leaseflow(tmp_path, "db", "upgrade").returncode == 0
    return tmp_path


@pytest.mark.parametrize(("args", "says"), [
    (["subnet", "add", "10.1.0.1/24", "--pool", "10.1.0.5-10.1.0.9"], "not an IPv4 network"),
    (["subnet", "add", "10.1.0.0/24", "--pool", "10.2.0.5-10.2.0.9"], "not inside"),
    (["lease", "request", "--subnet", "10.99.0.0/24", "--client-id", "x"], "no subnet"),
    (["lease", "release", "10.1.0.7"], "no lease holds"),
    (["process", "deploy", "/nonexistent.bpmn"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_1(migrated: Path, args: list[str], says: str) -> None:
    result = leaseflow(migrated, *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.stderr


def test_a_setting_of_the_wrong_type_is_one_line_and_exit_1(migrated: Path) -> None:
    result = leaseflow(migrated, "ledger", "verify", LEASEFLOW_DHCP_PORT="sixty-seven")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == \
        "leaseflow: LEASEFLOW_DHCP_PORT must be int, not 'sixty-seven'"


def test_subnet_then_lease_from_the_shell(migrated: Path) -> None:
    added = leaseflow(migrated, "subnet", "add", "10.3.0.0/24", "--pool", "10.3.0.10-10.3.0.20")
    assert added.returncode == 0, added.stderr
    bound = leaseflow(migrated, "lease", "request", "--subnet", "10.3.0.0/24",
                      "--client-id", "shell-1", "--wait", "--timeout", "60")
    assert bound.returncode == 0, bound.stderr
    assert '"state": "bound"' in bound.stdout
    listing = leaseflow(migrated, "lease", "list")
    assert "shell-1" in listing.stdout and "bound" in listing.stdout


def test_the_migrations_leave_the_logging_set_up_as_it_was(tmp_path):
    """Alembic's logging set-up (migrations/env.py) runs with every upgrade, also inside a
    server that migrates at start: it must not disable the loggers already made nor replace
    the handlers, or that server's warnings vanish."""
    import logging

    from app.services import lease_index  # its logger exists before the upgrade
    from lf_support import make_app

    handlers = list(logging.getLogger().handlers)
    assert handlers  # pytest's own capture
    make_app(tmp_path)
    assert not logging.getLogger(lease_index.__name__).disabled
    assert logging.getLogger().handlers == handlers
