"""`leaseflow dhcp --processes 2`: two forked servers on one port and one PostgreSQL
database, the kernel steering each client to one of them, against real clients (broadcast,
every copy reaching both processes) and perfdhcp (relayed unicast, steered by chaddr)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.peers.leaseflow_dhcp import BenchDatabase, libpq_url
from bench.peers.netns import Namespace, NetnsUnavailable, veth_pair
from bench.peers.perfdhcp import REQUEST_ACK, run_perfdhcp
from lf_support import read_until, stop

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
SUBNET, POOL = "10.77.0.0/24", "10.77.0.10-10.77.0.249"


@pytest.fixture
def env(pg_database: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The CLI's environment on a fresh PostgreSQL database, reached through its unix
    socket (the namespace's loopback is not the machine's) and holding the subnet."""
    name = pg_database.rsplit("/", 1)[1]
    url = BenchDatabase(pg_database, name=name).ensure()
    env = os.environ | {"LEASEFLOW_DATABASE_URL": url, "LEASEFLOW_BROKER_URL": "memory://",
                        "LEASEFLOW_SECRET_KEY": "t", "LEASEFLOW_ADMIN_PASSWORD": "t",
                        "LEASEFLOW_API_TOKEN": "t", "LEASEFLOW_DHCP_DORA": "fast"}
    for argv in (["db", "upgrade"], ["subnet", "add", SUBNET, "--pool", POOL,
                                     "--gateway", "10.77.0.1"]):
        done = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    yield env


def bound(url: str) -> dict[str, str]:
    """client id → address of every bound lease."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT client_id, address FROM leases "
                            "WHERE state = 'bound'").fetchall()
    return {client: str(ipaddress.IPv4Address(address)) if isinstance(address, int)
            else str(address) for client, address in rows}


def serve(ns, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "dhcp.log").open("wb")
    server = ns.popen([sys.executable, "-m", "app.cli", "dhcp", "--interface", ns.interface,
                       "--processes", "2"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                      stderr=log)
    log.close()
    ready = read_until(server, "DHCP: ", timeout=90)
    assert ready.strip() == f"DHCP: listening on {ns.interface}:67 as 10.77.0.1 " \
                           "(2 processes)", ready + (tmp_path / "dhcp.log").read_text()
    return server


def test_two_processes_answer_a_broadcasting_client_once(dhcp_network, make_client, env,
                                                         tmp_path) -> None:
    server_ns, _ = dhcp_network
    server = serve(server_ns, env, tmp_path)
    try:
        client = make_client("dhclient")
        result = client.obtain()
        assert result.returncode == 0, result.stderr
        _, address = client.wait_event(["BOUND"])
    finally:
        out = stop(server, signal.SIGTERM)
    assert server.returncode == 0, (tmp_path / "dhcp.log").read_text()
    counters = json.loads(out.strip().splitlines()[-1])
    assert list(bound(env["LEASEFLOW_DATABASE_URL"]).values()) == [address]
    # The DISCOVER and the REQUEST (and any retransmission) reached both processes; the
    # one holding the offer answered, the other let every copy be.
    assert counters["offers"] >= 1 and counters["acks"] >= 1
    assert counters["ignored_other_process"] == counters["received"] >= 2
    assert counters.get("naks", 0) == 0


@pytest.fixture
def relay_network() -> Iterator[tuple[Namespace, Namespace]]:
    """The client side has an address in the subnet: perfdhcp relays from it."""
    try:
        with veth_pair("10.77.0.1/24", "10.77.0.2/24") as pair:
            yield pair
    except NetnsUnavailable as exc:
        pytest.fail(str(exc))


def test_two_processes_share_perfdhcp_clients_without_a_conflict(relay_network, env,
                                                                 tmp_path) -> None:
    server_ns, client_ns = relay_network
    server = serve(server_ns, env, tmp_path)
    try:
        run = run_perfdhcp(client_ns, server="10.77.0.1", rate=50, seconds=3, clients=120,
                           timestamps=False)
    finally:
        out = stop(server, signal.SIGTERM)
    assert server.returncode == 0, (tmp_path / "dhcp.log").read_text()
    leases = bound(env["LEASEFLOW_DATABASE_URL"])
    assert run.stats(REQUEST_ACK).received >= len(leases) > 50
    assert len(set(leases.values())) == len(leases)
    # Each process offers from its own stripe of the pool (address mod 2): both served,
    # and no REQUEST lost an address to the other's offer.
    parities = {int(ipaddress.IPv4Address(a)) % 2 for a in leases.values()}
    assert parities == {0, 1}
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters.get("naks", 0) == 0
    assert counters["acks"] >= len(leases)


def test_several_processes_need_a_shared_database_server(dhcp_network, tmp_path) -> None:
    server_ns, _ = dhcp_network
    env = os.environ | {"LEASEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}",
                        "LEASEFLOW_SECRET_KEY": "t", "LEASEFLOW_ADMIN_PASSWORD": "t",
                        "LEASEFLOW_API_TOKEN": "t"}
    done = server_ns.run([sys.executable, "-m", "app.cli", "dhcp", "--interface",
                          server_ns.interface, "--processes", "2"], cwd=REPO, env=env,
                         timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "leaseflow: --processes needs a database server that processes share: set "
        "LEASEFLOW_DATABASE_URL to PostgreSQL")
