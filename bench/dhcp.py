"""DHCP benchmark: perfdhcp against Kea and against Leaseflow's own servers, in one run.

Four servers are measured in the same pair of network namespaces (server side and client
side of one veth pair), one after the other, with the same perfdhcp settings: Kea (memfile,
the issue's reference), Kea with its PostgreSQL lease backend (the like-for-like peer of the
product, which also keeps its leases durably in PostgreSQL; its own database `kea_bench`,
schema by `kea-admin db-init`, reached through the unix socket directory), both with one
thread and WARN logging, Leaseflow's protocol engine on its in-memory backend, and the
product, `leaseflow dhcp --dora fast|process` on PostgreSQL + Redis with `--followers N`
`leaseflow worker` processes (bench/peers/leaseflow_dhcp.py says how the namespace reaches
PostgreSQL and Redis).

- new-lease rate: DORAs completed per second (REQUEST-ACK received / seconds) at the highest
  offered rate whose run dropped at most 0.1 % of exchanges. Every step starts on a fresh
  lease store (a restarted server) and uses at least rate × seconds distinct clients, so
  every exchange is a new lease. The rate grows geometrically until a step fails (or halves
  until one passes, when the first step already fails), then the boundary is bisected; once
  a step has passed, a failed step is repeated once, because on a small shared machine runs
  at the same rate vary a lot.
- delays: perfdhcp's per-exchange timestamps (`-x t`) of one more run at the best passing
  rate (recording them slows perfdhcp, so the search runs without), as p50/p99 of
  DISCOVER→OFFER and of REQUEST→ACK separately (perfdhcp does not pair them per client).
- renewal rate: REQUEST (RENEWING) → ACK completed per second at the highest rate with at
  most 0.1 % drops. perfdhcp sends renewals only beside DORAs and never faster than them,
  so a renewal step runs `-r N -f N` for 1,000 known clients: N DORAs plus N renewals a second.
- CPU: the server's processes' user + system CPU during the best step of each search, per
  new lease and per renewal (the DORA beside it included), plus the PostgreSQL cluster's
  where the leases are kept there; and perfdhcp's own, measured the same way. perfdhcp
  shares the cores with the server, and at these rates it needs as much CPU as Kea or more:
  what a server leaves to it decides, in part, how fast it can go.

The product needs ~17 s of set-up per step (a new schema, migrations and the subnet through
the CLI, the server and its followers) and completes hundreds of new leases a second (its
process path tens), not thousands: it searches from its own start rate with a larger time
budget, and each of its steps also reports the server's counters (offers, acks, drops), the
`dhcp_lease` instances and how many had started when perfdhcp exited, and how long the
followers took to start the rest.

`python -m bench.dhcp [--quick] [--only kea,kea-pg,leaseflow,product] [--dora fast|process]
[--followers N] [--seconds S] [--json]`; `main(argv)` serves `leaseflow bench dhcp`. The two
Keas and the in-memory engine take 3-6 minutes in all, `--quick` (1 s steps, a coarse search,
no bisection) about 30 s each; the product adds 4-10 minutes, about 2 with `--quick`. All
traffic stays inside the two namespaces this run creates, on loopback and on unix sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings
from app.dhcp.reuse import check_threshold
from bench.peers.cpu import CpuUse, Meter
from bench.peers.kea import KeaPeer, KeaPeerError, KeaPostgres
from bench.peers.leaseflow_dhcp import (
    DORA_MODES,
    PRODUCT_PREFIX,
    ProductError,
    ProductFigures,
    ProductTarget,
    describe,
)
from bench.peers.netns import Namespace, NetnsUnavailable, udp_counters, veth_pair
from bench.peers.perfdhcp import (
    DISCOVER_OFFER,
    RENEW_ACK,
    REQUEST_ACK,
    PerfdhcpError,
    PerfdhcpRun,
    find_perfdhcp,
    run_perfdhcp,
)

MAX_DROP_RATIO = 0.001
# A /12 of ~1 M addresses: every new-lease step needs rate × seconds × 1.2 of them, and a
# /16 capped the search at ~10,900/s with 5 s steps (Kea memfile reached that cap here).
SERVER_ADDRESS = "10.64.0.1/12"
CLIENT_ADDRESS = "10.64.0.2/12"  # perfdhcp's giaddr: the subnet must contain it
SUBNET = "10.64.0.0/12"
POOL_FIRST, POOL_LAST = "10.64.1.0", "10.79.255.254"
POOL_SIZE = int(ipaddress.IPv4Address(POOL_LAST)) - int(ipaddress.IPv4Address(POOL_FIRST)) + 1
RENEW_CLIENTS = 1_000
DELAY_RUN_FACTORS = (1.0, 0.8, 0.5)
MIN_RATE = 100
SERVERS = ("kea", "kea-cache", "kea-pg", "leaseflow", "product")
REUSE = Settings.dhcp_reuse  # the product's default LEASEFLOW_DHCP_REUSE
# The product's search starts near what it completed here (2 cores: the fast path ~90-150
# new leases/s with 1-5 s steps, the process path tens); each of its steps costs ~17 s of
# set-up, so its budget (a cap: the search ends by itself) is larger.
PRODUCT_START_RATE = {"fast": 250, "process": 40}
PRODUCT_MIN_RATE = 10
PRODUCT_BUDGET_FACTOR = 8
REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """The benchmark could not run (a peer is missing or failed to start)."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How hard and how long to push each server."""

    seconds: float
    start_rate: int
    growth: float
    max_rate: int
    bisections: int
    retries: int  # extra attempts for a failed step once a boundary is known
    renew: bool
    budget: float  # seconds per server: 55 % new leases, 45 % renewals; delay runs on top
    min_rate: int = MIN_RATE  # the search halves no lower


FULL = Plan(seconds=3.0, start_rate=1000, growth=1.6, max_rate=20_000, bisections=2,
            retries=1, renew=True, budget=110.0)
QUICK = Plan(seconds=1.0, start_rate=1000, growth=3.0, max_rate=27_000, bisections=0,
             retries=0, renew=True, budget=12.0)


def product_plan(plan: Plan, dora: str) -> Plan:
    """The plan for the product: its own start rate and floor, and more time (see above)."""
    return Plan(**asdict(plan) | {"start_rate": PRODUCT_START_RATE[dora],
                                  "min_rate": PRODUCT_MIN_RATE,
                                  "budget": plan.budget * PRODUCT_BUDGET_FACTOR})


class Target(Protocol):
    """A DHCP server under test, inside the server namespace."""

    name: str
    uses_postgres: bool  # keeps its leases in PostgreSQL: its CPU per lease counts the cluster's

    def server_pids(self) -> list[int]:
        """The running processes of the server (their descendants count too)."""

    def start(self) -> None: ...

    def fresh(self) -> None:
        """Restart with an empty lease store."""

    def settle(self) -> ProductFigures | None:
        """After a perfdhcp run: what the server says it did, where it says anything."""

    def stop(self) -> None: ...


class KeaTarget:
    """kea-dhcp4: memfile lease store, one thread, WARN logging."""

    name = "Kea 2.2 (memfile, 1 thread)"
    directory = "kea"
    uses_postgres = False
    cache_threshold: float | None = None  # Kea's lease caching: off

    def __init__(self, namespace: Namespace, workdir: Path) -> None:
        self.namespace = namespace
        self.workdir = workdir / self.directory
        self.peer: KeaPeer | None = None

    def lease_store(self) -> KeaPostgres | None:
        """The prepared lease store Kea is given; None: its memfile."""
        return None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.peer = KeaPeer(workdir=self.workdir, subnet=SUBNET,
                            pool=f"{POOL_FIRST} - {POOL_LAST}", namespace=self.namespace,
                            lease_store=self.lease_store(),
                            cache_threshold=self.cache_threshold)
        self.peer.start()

    def fresh(self) -> None:
        assert self.peer is not None
        self.peer.restart_dhcp4(fresh=True)

    def server_pids(self) -> list[int]:
        pid = self.peer.dhcp4_pid if self.peer is not None else None
        return [pid] if pid is not None else []

    def settle(self) -> None:
        return None

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.stop()
            self.peer = None


class KeaCachingTarget(KeaTarget):
    """kea-dhcp4 on its memfile with lease caching (`cache-threshold`): the like-for-like
    peer of the product's lease reuse (`LEASEFLOW_DHCP_REUSE`) at the same fraction."""

    directory = "kea-cache"

    def __init__(self, namespace: Namespace, workdir: Path, threshold: float) -> None:
        super().__init__(namespace, workdir)
        self.cache_threshold = threshold
        self.name = caching_name(threshold)


CACHING_NAME = "Kea 2.2 (memfile, 1 thread, cache-threshold"


def caching_name(threshold: float) -> str:
    return f"{CACHING_NAME} {threshold:g})"


class KeaPostgresTarget(KeaTarget):
    """kea-dhcp4 with its PostgreSQL lease backend (database `kea_bench`, a new schema per
    run, its lease tables emptied per step), one thread, WARN logging."""

    name = "Kea 2.2 (PostgreSQL, 1 thread)"
    directory = "kea-pg"
    uses_postgres = True

    def lease_store(self) -> KeaPostgres:
        return KeaPostgres().prepare()


class LeaseflowTarget:
    """Leaseflow's server (`python -m app.dhcp.server`) with its in-memory backend."""

    name = "Leaseflow (in-memory backend)"
    uses_postgres = False

    def __init__(self, namespace: Namespace, workdir: Path) -> None:
        self.namespace = namespace
        self.log = workdir / "leaseflow-dhcp.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("app.dhcp.server") is not None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "app.dhcp.server",
                "--interface", self.namespace.interface,
                "--server-id", self.namespace.ip,
                "--subnet", SUBNET, "--pool", f"{POOL_FIRST}-{POOL_LAST}",
                "--lease-time", "3600"]

    def start(self) -> None:
        if not self.available():
            raise BenchError("app/dhcp/server.py is not there yet: Leaseflow's side cannot run")
        with open(self.log, "wb") as log:  # fresh per start: readiness reads it
            self.proc = self.namespace.popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             cwd=REPO)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        # The server prints `listening on IF:PORT` once its socket is bound; from then on
        # the kernel queues what perfdhcp sends, so nothing is lost to a late start.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"Leaseflow's server exited with {self.proc.returncode}: "
                                 f"{self._tail()}")
            if "listening on" in self._tail():
                return
            time.sleep(0.02)  # polling interval
        raise BenchError(f"Leaseflow's server not listening after {timeout:.0f} s: "
                         f"{self._tail()}")

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""

    def fresh(self) -> None:
        self.stop()
        self.start()

    def server_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def settle(self) -> None:
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@dataclass(frozen=True, kw_only=True)
class Step:
    rate: int
    completed: float
    drop_ratio: float
    figures: ProductFigures | None = None  # the product's, of this step
    cpu: CpuUse | None = None  # CPU ms per completed exchange (server, database)
    client_cpu: float | None = None  # perfdhcp's CPU ms per completed exchange
    overflows: Overflows | None = None  # where counted

    @property
    def passed(self) -> bool:
        return self.drop_ratio <= MAX_DROP_RATIO


@dataclass(frozen=True)
class Overflows:
    """Datagrams lost during a step at a socket whose receive buffer was full (the
    namespaces' UDP RcvbufErrors): at the server's sockets, and at perfdhcp's. A reply lost
    at perfdhcp's counts as a drop although the server sent it."""

    server: int
    client: int

    def __sub__(self, before: Overflows) -> Overflows:
        return Overflows(self.server - before.server, self.client - before.client)


OverflowCounter = Callable[[], Overflows]


def overflows_since(counter: OverflowCounter | None) -> Callable[[], Overflows | None]:
    """A reading of `counter` now, and a function giving what overflowed since (None
    without a counter)."""
    if counter is None:
        return lambda: None
    before = counter()
    return lambda: counter() - before


def overflow_counter(server: Namespace, client: Namespace) -> OverflowCounter:
    """The two namespaces' RcvbufErrors so far."""
    def read() -> Overflows:
        return Overflows(udp_counters(server).get("RcvbufErrors", 0),
                         udp_counters(client).get("RcvbufErrors", 0))
    return read


def overflow_note(steps: Sequence[Step]) -> str | None:
    """Where the failed steps among `steps` lost datagrams to full receive buffers, or
    None when no failed step was counted."""
    failed = [step.overflows for step in steps if not step.passed and step.overflows is not None]
    if not failed:
        return None
    at_client = sum(1 for lost in failed if lost.client)
    return (f"{at_client} of {len(failed)} failed steps lost replies in perfdhcp's receive "
            f"buffer ({sum(lost.client for lost in failed):,} datagrams); the server's "
            f"sockets lost {sum(lost.server for lost in failed):,}")


@dataclass(frozen=True, kw_only=True)
class ServerResult:
    server: str
    new_leases_per_s: float | None = None
    new_offered_rate: int | None = None
    new_drop_ratio: float | None = None
    discover_offer_p50_ms: float | None = None
    discover_offer_p99_ms: float | None = None
    request_ack_p50_ms: float | None = None
    request_ack_p99_ms: float | None = None
    delays_rate: int | None = None  # the offered rate of the run the delays come from
    delays_drop_ratio: float | None = None
    renewals_per_s: float | None = None
    renew_p50_ms: float | None = None
    renew_p99_ms: float | None = None
    renew_delays_rate: int | None = None
    renew_delays_drop_ratio: float | None = None
    # True where no faster step failed: the search stopped at its ceiling (the plan's
    # max_rate, the pool) or its deadline, so the figure is what the server did at least.
    new_lower_bound: bool = False
    renew_lower_bound: bool = False
    steps: int = 0
    error: str | None = None
    figures: ProductFigures | None = None  # the product's, of the step new_leases_per_s is from
    figures_rate: int | None = None  # that step's offered rate
    cpu_ms: CpuUse | None = None  # CPU ms per new lease at the best new-lease step
    renew_cpu_ms: CpuUse | None = None  # CPU ms per renewal at the best renewal step
    # perfdhcp's CPU ms per new lease, per renewal, at those steps
    perfdhcp_cpu_ms: float | None = None
    renew_perfdhcp_cpu_ms: float | None = None
    overflows: str | None = None  # `overflow_note` of the search's steps


def search_highest_rate(
    measure: Callable[[int], tuple[Step, PerfdhcpRun]], plan: Plan, start_rate: int,
    deadline: float = math.inf,
) -> tuple[Step, PerfdhcpRun] | None:
    """Highest passing step: grow the rate until a step fails, then bisect the boundary."""
    best: tuple[Step, PerfdhcpRun] | None = None

    def attempt(rate: int) -> bool:
        # Once one step has passed, a failure may be noise near the boundary: repeat it.
        nonlocal best
        for _ in range(1 + (plan.retries if best is not None else 0)):
            if time.monotonic() > deadline:
                return False  # out of time: keep what was found
            step, run = measure(rate)
            if step.passed:
                if best is None or step.completed > best[0].completed:
                    best = (step, run)
                return True
        return False

    rate, failed = min(start_rate, plan.max_rate), None
    if attempt(rate):
        while int(rate * plan.growth) <= plan.max_rate:
            rate = int(rate * plan.growth)
            if not attempt(rate):
                failed = rate
                break
    else:
        # Already too fast at the start (or a noisy first run): come down until one passes.
        failed = rate
        while best is None and rate // 2 >= plan.min_rate:
            rate //= 2
            if not attempt(rate):
                failed = rate
    if failed is None or best is None:
        return best
    low, high = best[0].rate, failed
    for _ in range(plan.bisections):
        middle = (low + high) // 2
        if middle <= low:
            break
        if attempt(middle):
            low = middle
        else:
            high = middle
    return best


def lower_bound(best: Step, tried: Sequence[Step]) -> bool:
    """No step faster than `best` failed: `best` is a floor of the server's rate, not its
    limit."""
    return not any(step.rate > best.rate and not step.passed for step in tried)


def delay_run(
    measure: Callable[[int, bool], tuple[Step, PerfdhcpRun]], rate: int,
    min_rate: int = MIN_RATE,
) -> tuple[Step, PerfdhcpRun]:
    """A run with per-exchange timestamps, at the best rate or a little below it.

    Recording every timestamp (-x t) costs perfdhcp a few % of its rate, so the search runs
    without it; an overloaded run's delays would describe its queue, not the server, so
    the rate steps down until a run passes (the last one is kept if none does).
    """
    result: tuple[Step, PerfdhcpRun] | None = None
    for factor in DELAY_RUN_FACTORS:
        result = measure(max(min_rate, int(rate * factor)), True)
        if result[0].passed:
            break
    assert result is not None
    return result


def measure_server(target: Target, client: Namespace, plan: Plan,
                   progress: Callable[[str], None],
                   overflows: OverflowCounter | None = None) -> ServerResult:
    """`overflows`: counts each step's datagrams lost at full receive buffers."""
    server_ip = SERVER_ADDRESS.split("/")[0]
    steps = 0
    last_new: Step | None = None  # whose figures to show when no step passes
    tried_new: list[Step] = []  # the search's steps (not the delay runs)
    tried_renew: list[Step] = []

    def settle() -> ProductFigures | None:
        figures = target.settle()
        if figures is not None:
            progress(f"    {describe(figures)}")
        return figures

    def metered(rate: int, what: str, per: str, completed: Callable[[PerfdhcpRun], float],
                dropped: Callable[[PerfdhcpRun], float],
                **perfdhcp: Any) -> tuple[Step, PerfdhcpRun]:
        """One step on a fresh lease store: perfdhcp's run at `rate`, the server's and
        perfdhcp's CPU per exchange completed, and the datagrams lost at full buffers."""
        nonlocal steps
        steps += 1
        target.fresh()
        meter = Meter(target.server_pids, database=target.uses_postgres)
        lost = overflows_since(overflows)
        meter.start()
        run = run_perfdhcp(client, server=server_ip, rate=rate, seconds=plan.seconds,
                           **perfdhcp)
        per_second = completed(run)
        done = per_second * plan.seconds
        step = Step(rate=rate, completed=per_second, drop_ratio=dropped(run),
                    cpu=meter.stop().per(done), client_cpu=per_ms(run.cpu_seconds, done),
                    overflows=lost())
        progress(f"  {target.name}: {what} at {rate}/s → {step.completed:,.0f}/s, "
                 f"drops {step.drop_ratio:.3%}{_lost(step.overflows)}, "
                 f"CPU ms/{per} {_cpu(step.cpu)}, perfdhcp's {_ms_of(step.client_cpu)}")
        return step, run

    def new_leases(rate: int, timestamps: bool = False) -> tuple[Step, PerfdhcpRun]:
        nonlocal last_new
        step, run = metered(
            rate, "new leases", "lease", lambda run: run.new_lease_rate,
            lambda run: run.dora_drop_ratio, timestamps=timestamps,
            clients=min(POOL_SIZE, max(1000, int(rate * plan.seconds * 1.2))))
        step = replace(step, figures=settle())
        if not timestamps:
            last_new = step
            tried_new.append(step)
        return step, run

    def renewals(rate: int, timestamps: bool = False) -> tuple[Step, PerfdhcpRun]:
        # Each renewal goes beside a DORA of a known client; its CPU is counted with it.
        step, run = metered(
            rate, "renewals", "renewal", lambda run: run.renew_rate,
            lambda run: max(run.dora_drop_ratio, run.renew_drop_ratio),
            timestamps=timestamps, clients=RENEW_CLIENTS, renew_rate=rate)
        settle()
        if not timestamps:
            tried_renew.append(step)
        return step, run

    # The new-lease figure is capped by the pool: every step needs rate × seconds addresses.
    capped = Plan(**asdict(plan) | {"max_rate": min(plan.max_rate,
                                                    int(POOL_SIZE / plan.seconds / 1.2))})
    began = time.monotonic()
    best_new = search_highest_rate(new_leases, capped, plan.start_rate,
                                   deadline=began + plan.budget * 0.55)
    result: dict[str, object] = {"server": target.name}
    shown = best_new[0] if best_new is not None else last_new
    if shown is not None and shown.figures is not None:
        result |= {"figures": shown.figures, "figures_rate": shown.rate}
    if best_new is not None:
        step = best_new[0]
        delay_step, run = delay_run(new_leases, step.rate, plan.min_rate)
        dora, rack = run.stats(DISCOVER_OFFER), run.stats(REQUEST_ACK)
        result |= {
            "delays_rate": delay_step.rate, "delays_drop_ratio": delay_step.drop_ratio,
            "new_leases_per_s": step.completed, "new_offered_rate": step.rate,
            "new_lower_bound": lower_bound(step, tried_new), "cpu_ms": step.cpu,
            "perfdhcp_cpu_ms": step.client_cpu,
            "new_drop_ratio": step.drop_ratio,
            "discover_offer_p50_ms": dora.percentile(50),
            "discover_offer_p99_ms": dora.percentile(99),
            "request_ack_p50_ms": rack.percentile(50), "request_ack_p99_ms": rack.percentile(99),
        }
    if plan.renew:
        # Renewal steps carry as many DORAs as renewals: start below the DORA limit.
        floor = min(250, plan.start_rate)
        start = max(floor, int((best_new[0].rate if best_new else plan.start_rate) / 2))
        best_renew = search_highest_rate(renewals, plan, start,
                                         deadline=time.monotonic() + plan.budget * 0.45)
        if best_renew is not None:
            renew_step, renew_run = delay_run(renewals, best_renew[0].rate, plan.min_rate)
            renew = renew_run.stats(RENEW_ACK)
            result |= {"renewals_per_s": best_renew[0].completed,
                       "renew_cpu_ms": best_renew[0].cpu,
                       "renew_perfdhcp_cpu_ms": best_renew[0].client_cpu,
                       "renew_lower_bound": lower_bound(best_renew[0], tried_renew),
                       "renew_delays_rate": renew_step.rate,
                       "renew_delays_drop_ratio": renew_step.drop_ratio,
                       "renew_p50_ms": renew.percentile(50),
                       "renew_p99_ms": renew.percentile(99)}
    result["overflows"] = overflow_note(tried_new + tried_renew)
    return ServerResult(**result, steps=steps)  # type: ignore[arg-type]


def _lost(lost: Overflows | None) -> str:
    """A step's datagrams lost at full receive buffers, for its progress line."""
    if lost is None:
        return ""
    return f" (receive buffers overflowed: server {lost.server:,}, perfdhcp {lost.client:,})"


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lf-bench-dhcp-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_target(name: str, namespace: Namespace, workdir: Path, *, dora: str = "fast",
                followers: int = 1, processes: int = 1, reuse: float = REUSE) -> Target:
    if name == "kea":
        return KeaTarget(namespace, workdir)
    if name == "kea-cache":
        return KeaCachingTarget(namespace, workdir, reuse)
    if name == "kea-pg":
        return KeaPostgresTarget(namespace, workdir)
    if name == "leaseflow":
        return LeaseflowTarget(namespace, workdir)
    if name == "product":
        return ProductTarget(namespace, workdir, subnet=SUBNET, pool=f"{POOL_FIRST}-{POOL_LAST}",
                             dora=dora, followers=followers, processes=processes, reuse=reuse)
    raise ValueError(f"unknown server {name!r}")


def run_bench(servers: Sequence[str], plan: Plan, progress: Callable[[str], None], *,
              dora: str = "fast", followers: int = 1, processes: int = 1,
              reuse: float = REUSE) -> list[ServerResult]:
    results: list[ServerResult] = []
    with _workdir() as workdir, veth_pair(SERVER_ADDRESS, CLIENT_ADDRESS) as (server, client):
        for name in servers:
            target = make_target(name, server, workdir, dora=dora, followers=followers,
                                 processes=processes, reuse=reuse)
            progress(f"{target.name}:")
            try:
                target.start()
                results.append(measure_server(
                    target, client, product_plan(plan, dora) if name == "product" else plan,
                    progress, overflow_counter(server, client)))
            except (BenchError, KeaPeerError, PerfdhcpError, ProductError) as exc:
                results.append(ServerResult(server=target.name, error=str(exc)))
            finally:
                target.stop()
    return results


def _ms(p50: float | None, p99: float | None) -> str:
    if p50 is None or p99 is None:
        return "-"
    return f"{p50:.2f} / {p99:.2f}"


def _cpu(use: CpuUse | None) -> str:
    """CPU ms per lease: the server's, plus the database's where it has one."""
    if use is None:
        return "-"
    return f"{use.server:.3f}" + (f" + {use.database:.3f} db" if use.database else "")


def per_ms(seconds: float | None, exchanges: float) -> float | None:
    """CPU `seconds` as milliseconds per exchange; None when unmeasured or nothing done."""
    return None if seconds is None or exchanges <= 0 else seconds * 1e3 / exchanges


def _ms_of(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rate(value: float | None, floor: bool = False) -> str:
    """A rate for the table; `floor`: no faster step failed, so the server did at least
    this much (≥)."""
    return "-" if value is None else f"{'≥ ' if floor else ''}{value:,.0f}"


def render(results: Sequence[ServerResult], plan: Plan, elapsed: float) -> str:
    cores = os.cpu_count() or 0
    header = ("server", "new leases/s", "drops", "D→O p50/p99 ms", "R→A p50/p99 ms",
              "renewals/s", "renew p50/p99 ms", "CPU ms/lease", "CPU ms/renewal",
              "perfdhcp ms")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        if r.error:
            rows.append((r.server, "error", *[""] * (len(header) - 2)))
            continue
        rows.append((
            r.server, _rate(r.new_leases_per_s, r.new_lower_bound),
            "-" if r.new_drop_ratio is None else f"{r.new_drop_ratio:.3%}",
            _ms(r.discover_offer_p50_ms, r.discover_offer_p99_ms),
            _ms(r.request_ack_p50_ms, r.request_ack_p99_ms),
            _rate(r.renewals_per_s, r.renew_lower_bound), _ms(r.renew_p50_ms, r.renew_p99_ms),
            _cpu(r.cpu_ms), _cpu(r.renew_cpu_ms),
            f"{_ms_of(r.perfdhcp_cpu_ms)} / {_ms_of(r.renew_perfdhcp_cpu_ms)}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"DHCP benchmark: perfdhcp in a client namespace, {cores} cores "
             f"({platform.machine()}), {plan.seconds:g} s per step, drops ≤ "
             f"{MAX_DROP_RATIO:.1%}, {elapsed:.0f} s in all"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w)
                               for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.error:
            lines.append(f"{r.server}: {r.error}")
        if r.figures is not None:
            lines.append(product_line(r))
        if r.overflows is not None:
            lines.append(f"{r.server}: {r.overflows}")
        for what, rate, drops in (("delays", r.delays_rate, r.delays_drop_ratio),
                                  ("renew delays", r.renew_delays_rate,
                                   r.renew_delays_drop_ratio)):
            if rate is not None and drops is not None and drops > MAX_DROP_RATIO:
                lines.append(f"{r.server}: {what} from an overloaded run ({rate}/s, "
                             f"{drops:.1%} dropped): no timestamped run passed")
    kea = next((r for r in results if r.server == KeaTarget.name), None)
    kea_pg = next((r for r in results if r.server == KeaPostgresTarget.name), None)
    kea_cache = next((r for r in results if r.server.startswith(CACHING_NAME)), None)
    engine = next((r for r in results if r.server.startswith("Leaseflow")
                   and not r.server.startswith(PRODUCT_PREFIX)), None)
    product = next((r for r in results if r.server.startswith(PRODUCT_PREFIX)), None)
    for label, ours, peer, peer_label in (
        ("Leaseflow", engine, kea, "Kea"),
        (PRODUCT_PREFIX, product, kea, "Kea"),
        (PRODUCT_PREFIX, product, kea_cache, "Kea (lease caching)"),
        (PRODUCT_PREFIX, product, kea_pg, "Kea (PostgreSQL)"),
    ):
        if peer and ours:
            lines += ratio_line(label, ours, peer, peer_label)
            lines += cpu_ratio_line(label, ours, peer, peer_label)
    lines += [
        "new leases/s: REQUEST-ACK received / seconds at the best step with ≤ 0.1 % drops,",
        "  fresh lease store and rate × seconds distinct clients per step;",
        "delays: perfdhcp -x t timestamps of a passing run at (or just below) that rate;",
        "renewals/s: renew ACKs / seconds beside an equal DORA rate for 1,000 clients "
        "(perfdhcp -r N -f N);",
        "≥: no faster step failed (the search reached its ceiling of "
        f"{plan.max_rate:,}/s or its time budget);",
        "CPU ms/lease: user + system CPU of the server's processes (the product's followers",
        "  too) during that step, per lease completed; + db: the PostgreSQL cluster's;",
        "CPU ms/renewal: the same during the best renewal step, per renewal completed (with",
        "  the DORA beside it);",
        "perfdhcp ms: perfdhcp's own CPU at those two steps, per lease / per renewal: it",
        "  shares the cores with the server.",
        "CPU ×: one server's CPU per exchange (database included) over the other's, each at",
        "  its own best step: steadier from run to run than the ratio of rates.",
        "receive buffers: datagrams lost at a full socket receive buffer during a step (the",
        "  namespaces' UDP RcvbufErrors); perfdhcp counts a reply lost at its own as a drop.",
    ]
    if any(r.figures is not None for r in results):
        lines += [
            "product: the server's counters at exit, and the dhcp_lease instances of that "
            "step: how many",
            "  had started when perfdhcp exited, how long the followers took for the rest.",
        ]
    return "\n".join(lines)


def ratio_line(label: str, ours: ServerResult, kea: ServerResult,
               kea_label: str = "Kea") -> list[str]:
    """`label / Kea: new leases R ×, renewals R × Kea` (`kea_label` for Kea), or nothing
    without both figures."""
    if not (kea.new_leases_per_s and ours.new_leases_per_s):
        return []
    ratio = ours.new_leases_per_s / kea.new_leases_per_s
    new = _bounded(ours.new_lower_bound, kea.new_lower_bound)
    renew = ("" if not (kea.renewals_per_s and ours.renewals_per_s) else
             f", renewals {_bounded(ours.renew_lower_bound, kea.renew_lower_bound)}"
             f"{ours.renewals_per_s / kea.renewals_per_s:.2f} × {kea_label}")
    return [f"{label} / {kea_label}: new leases {new}{ratio:.2f} ×{renew}"]


def cpu_ratio_line(label: str, ours: ServerResult, peer: ServerResult,
                   peer_label: str) -> list[str]:
    """`label / peer: CPU R × per new lease, R × per renewal`, database included: steadier
    from run to run than the rates, which depend on what is left of the cores for perfdhcp;
    nothing without a figure on both sides."""
    parts = []
    for what, mine, theirs in (("per new lease", ours.cpu_ms, peer.cpu_ms),
                               ("per renewal", ours.renew_cpu_ms, peer.renew_cpu_ms)):
        if mine is not None and theirs is not None and theirs.total > 0:
            parts.append(f"{mine.total / theirs.total:.2f} × {what}")
    return [f"{label} / {peer_label}: CPU {', '.join(parts)}"] if parts else []


def _bounded(ours_floor: bool, peer_floor: bool) -> str:
    """How a ratio of two rates is bounded when either is a floor (≥) of its server's."""
    if ours_floor and peer_floor:
        return "~"  # both could be higher: no bound either way
    return "≥ " if ours_floor else "≤ " if peer_floor else ""


def product_line(result: ServerResult) -> str:
    """The product's figures under the table, with the step they come from."""
    assert result.figures is not None
    passed = result.new_offered_rate is not None
    step = (f"at {result.figures_rate:,}/s" if passed else
            f"at {result.figures_rate:,}/s (no step passed; the last one)")
    return f"{result.server} {step}: {describe(result.figures)}"


def server_list(text: str) -> list[str]:
    """`--only` values: one server or a comma list of them."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown server {', '.join(unknown) or repr(text)} (choose from "
            f"{', '.join(SERVERS)})")
    return names


def selected_servers(only: Sequence[Sequence[str]] | None, reuse: float = REUSE) -> list[str]:
    """Every server named by `--only` (in order, once each), or all of them (Kea with
    lease caching only where the product reuses leases)."""
    if not only:
        return [name for name in SERVERS if reuse or name != "kea-cache"]
    return list(dict.fromkeys(name for names in only for name in names))


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def fraction(text: str) -> float:
    try:
        return check_threshold(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leaseflow bench dhcp", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run per server "
                        "(1-3 minutes for the product)")
    parser.add_argument("--only", type=server_list, action="append",
                        help="measure only these servers: kea (memfile), kea-cache (memfile "
                             "with lease caching), kea-pg (Kea on PostgreSQL), leaseflow, "
                             "product (repeatable or a comma list); default all")
    parser.add_argument("--dora", choices=DORA_MODES, default="fast",
                        help="the product server's `leaseflow dhcp --dora` (default fast)")
    parser.add_argument("--followers", type=non_negative, default=1,
                        help="`leaseflow worker` processes beside the product server "
                             "(default 1; 0: the start jobs stay in the outbox)")
    parser.add_argument("--processes", type=positive, default=1,
                        help="the product server's `leaseflow dhcp --processes` (default 1)")
    parser.add_argument("--reuse", type=fraction, default=REUSE,
                        help="the product's LEASEFLOW_DHCP_REUSE and the cache-threshold of "
                             f"the kea-cache row (default {REUSE:g}; 0: off, no kea-cache)")
    parser.add_argument("--seconds", type=float, help="length of each step")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.seconds:
        plan = Plan(**asdict(plan) | {"seconds": args.seconds})
    servers = selected_servers(args.only, args.reuse)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    began = time.monotonic()
    try:
        find_perfdhcp()
        results = run_bench(servers, plan, progress, dora=args.dora, followers=args.followers,
                            processes=args.processes, reuse=args.reuse)
    except (PerfdhcpError, NetnsUnavailable, BenchError) as exc:
        print(f"bench dhcp: {exc}", file=sys.stderr)
        return 1
    print(render(results, plan, time.monotonic() - began))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
