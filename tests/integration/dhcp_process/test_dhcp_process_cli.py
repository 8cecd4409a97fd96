"""`leaseflow dhcp --interface IF`: the command itself, in the server namespace, with its own
SQLite database and in-process worker, serving a real dhclient."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def leaseflow(ns, env: dict[str, str], *argv: str, **kwargs) -> subprocess.Popen[bytes]:
    return ns.popen([sys.executable, "-m", "app.cli", *argv], cwd=REPO, env=env, **kwargs)


def test_leaseflow_dhcp_serves_a_real_client(dhcp_network, make_client, tmp_path):
    server_ns, _ = dhcp_network
    env = os.environ | {"LEASEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}",
                        "LEASEFLOW_BROKER_URL": "memory://", "LEASEFLOW_SECRET_KEY": "t",
                        "LEASEFLOW_ADMIN_PASSWORD": "t", "LEASEFLOW_API_TOKEN": "t"}
    for argv in (["db", "upgrade"], ["subnet", "add", "10.77.0.0/24", "--pool",
                                     "10.77.0.100-10.77.0.110", "--gateway", "10.77.0.1"]):
        done = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    log = (tmp_path / "dhcp.log").open("wb")
    server = leaseflow(server_ns, env, "dhcp", "--interface", server_ns.interface,
                       stdout=subprocess.PIPE, stderr=log)
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().decode()
        assert ready.startswith(f"DHCP: listening on {server_ns.interface}:67 as 10.77.0.1"), \
            ready + (tmp_path / "dhcp.log").read_text()
        client = make_client("dhclient")
        result = client.obtain()
        assert result.returncode == 0, result.stderr
        _, address = client.wait_event(["BOUND"])
        assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network("10.77.0.0/24")
        listing = subprocess.run([sys.executable, "-m", "app.cli", "lease", "list"], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        row = next(line for line in listing.stdout.splitlines() if line.startswith(address))
        assert row.split()[1] == "bound"
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=20)
        log.close()
    assert server.returncode == 0, (tmp_path / "dhcp.log").read_text()
    assert '"acks": 1' in out.decode()


def test_leaseflow_dhcp_without_subnets_is_one_clear_error(dhcp_network, tmp_path):
    server_ns, _ = dhcp_network
    env = os.environ | {"LEASEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}",
                        "LEASEFLOW_SECRET_KEY": "t", "LEASEFLOW_ADMIN_PASSWORD": "t",
                        "LEASEFLOW_API_TOKEN": "t"}
    result = server_ns.run([sys.executable, "-m", "app.cli", "dhcp", "--interface",
                            server_ns.interface], cwd=REPO, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        f"leaseflow: DHCP server on {server_ns.interface}: no subnet to serve"
