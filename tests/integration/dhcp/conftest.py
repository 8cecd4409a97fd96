"""Fixtures for real-peer DHCP tests: a veth pair, our server (memory backend) in one
namespace, and a real client in the other. Everything is stopped and deleted on teardown,
whatever the test did."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.peers.netns import Namespace

REPO = Path(__file__).resolve().parents[3]
SERVER_ADDRESS = "10.77.0.1/24"
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.100-10.77.0.199"
RELAYED_SUBNET = "10.88.0.0/24"
RELAYED_POOL = "10.88.0.10-10.88.0.20"


class ServerProcess:
    """`python -m app.dhcp.server` in a namespace, observed through its stats file."""

    def __init__(self, ns: Namespace, workdir: Path, *args: str) -> None:
        self.stats_file = workdir / "server-stats.json"
        self.log_file = workdir / "server.log"
        argv = [sys.executable, "-m", "app.dhcp.server", "--interface", ns.interface,
                "--subnet", SUBNET, "--pool", POOL, "--subnet", RELAYED_SUBNET,
                "--pool", RELAYED_POOL, "--gateway", "10.77.0.1", "--gateway", "10.88.0.1",
                "--dns", "10.77.0.53", "--stats-file", str(self.stats_file),
                "--log-level", "INFO", *args]
        self.process = ns.popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=self.log_file.open("wb"))
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().decode()
        if not ready.startswith("listening on"):
            self.stop()
            pytest.fail(f"DHCP server did not start: {ready!r} {self.log_file.read_text()}")

    def stats(self) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(self.stats_file.read_text())
        return {"counters": {}, "bindings": {}}

    def counters(self) -> dict[str, int]:
        return self.stats()["counters"]

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                 what: str = "condition") -> dict[str, Any]:
        """Poll the stats (written every 0.5 s) until `check` holds."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if check(stats):
                return stats
            if time.monotonic() > deadline:
                pytest.fail(f"server never reached {what}; last stats {stats}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start_server(dhcp_network, tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(dhcp_network[0], tmp_path, *args)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def dhcp_server(start_server) -> ServerProcess:
    return start_server("--lease-time", "600")
