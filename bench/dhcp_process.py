"""perfdhcp against the product DHCP server: `leaseflow dhcp`, every lease driven by the
`dhcp_lease` process (embedded default: SQLite + in-process worker).

`bench/dhcp.py` measures the protocol engine (in-memory backend) beside Kea; this one
measures what a client of a Leaseflow deployment gets, so the two together show where the
time goes. Each step starts a fresh database and server and offers perfdhcp `rate`
new DORA exchanges a second; the completed rate is REQUEST-ACK received / seconds. The
server's own counters (printed by `leaseflow dhcp` on exit) say where the rest went: offers
and acks sent, and what admission control dropped (`new` = DISCOVERs beyond the budget of
new exchanges, `stale` = asks that waited past the staleness bound, `full` = the pending
queue full).

Run: `leaseflow bench dhcp_process [--rates 10,20,30] [--seconds 10] [--dora fast]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers.netns import Namespace, veth_pair
from bench.peers.perfdhcp import run_perfdhcp

ROOT = Path(__file__).resolve().parent.parent


def _cli(env: dict[str, str], *argv: str) -> None:
    done = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())


@dataclass(frozen=True)
class Step:
    completed: float  # new leases a second (REQUEST-ACK received / seconds)
    drops: float  # exchanges started that never got their ACK
    counters: dict[str, int] = field(default_factory=dict)  # the server's, at exit


def server_counters(stdout: str) -> dict[str, int]:
    """The last JSON line `leaseflow dhcp` printed on exit (its counters), or {}."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return {str(k): int(v) for k, v in value.items()}
    return {}


def step(server: Namespace, client: Namespace, rate: int, seconds: float,
         dora: str = "process") -> Step:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEASEFLOW_")}
        env.update(LEASEFLOW_DATABASE_URL=f"sqlite:///{tmp}/lf.db", LEASEFLOW_SECRET_KEY="b",
                   LEASEFLOW_ADMIN_PASSWORD="b", LEASEFLOW_API_TOKEN="b")
        _cli(env, "db", "upgrade")
        _cli(env, "subnet", "add", "10.79.0.0/16", "--pool", "10.79.1.0-10.79.255.254")
        proc = server.popen([sys.executable, "-m", "app.cli", "dhcp", "--interface",
                             server.interface, "--dora", dora], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            if "listening" not in line:
                raise RuntimeError(f"leaseflow dhcp did not start: {line!r}")
            run = run_perfdhcp(client, server=server.ip, rate=rate, seconds=seconds,
                               clients=max(rate * int(seconds) * 2, 1000), timestamps=False)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rest, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                rest, _ = proc.communicate()
        return Step(run.new_lease_rate, run.dora_drop_ratio,
                    server_counters(rest.decode(errors="replace")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaseflow bench dhcp_process", description=__doc__)
    parser.add_argument("--rates", default="10,20,30")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dora", choices=["process", "fast"], default="process",
                        help="the server's DORA path (leaseflow dhcp --dora)")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    print(f"DHCP through the lease process (embedded default, {args.dora} DORA path), "
          f"perfdhcp in a second namespace, {os.cpu_count()} cores, {args.seconds:g} s per "
          f"step")
    print(f"{'offered/s':>10} {'new leases/s':>13} {'drops':>8}   server: "
          f"{'offers':>6} {'acks':>6} {'new':>6} {'stale':>6} {'full':>6}")
    with veth_pair("10.79.0.1/16", "10.79.0.2/16") as (server, client):
        for rate in rates:
            done = step(server, client, rate, args.seconds, args.dora)
            c = done.counters
            print(f"{rate:>10} {done.completed:>13.1f} {done.drops:>8.2%}   server: "
                  f"{c.get('offers', 0):>6} {c.get('acks', 0):>6} "
                  f"{c.get('dropped_overload_new', 0):>6} {c.get('dropped_stale', 0):>6} "
                  f"{c.get('dropped_overload', 0):>6}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
