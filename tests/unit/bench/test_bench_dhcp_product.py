"""The product target of the DHCP benchmark, its pure parts: the command line, the plan, the
URLs that let a namespace reach PostgreSQL, the server's counters, the figures a step leaves
behind and how they are shown. Nothing here starts a process or opens a socket."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.dhcp import (
    FULL,
    QUICK,
    LeaseflowTarget,
    Plan,
    ServerResult,
    Step,
    build_parser,
    measure_server,
    product_plan,
    render,
    search_highest_rate,
    selected_servers,
)
from bench.dhcp_process import server_counters
from bench.peers.leaseflow_dhcp import (
    DEFAULT_DATABASE_URL,
    ProductFigures,
    ProductTarget,
    base_database_url,
    describe,
    dora_argv,
    drop_counts,
    figures_from,
    libpq_url,
    product_name,
    server_argv,
    socket_directory,
    socket_url,
    wait_for_starts,
)
from bench.peers.netns import Namespace
from bench.peers.perfdhcp import DISCOVER_OFFER, REQUEST_ACK, ExchangeStats, PerfdhcpRun

KEA = "Kea 2.2 (memfile, 1 thread)"
FAST = product_name("fast")


def figures(**overrides: object) -> ProductFigures:
    values: dict[str, object] = {
        "offers": 1500, "acks": 1490, "drops": 12, "instances": 1490, "started_at_exit": 300,
        "started": 1490, "followers": 1, "drain_seconds": 4.3, "waited_seconds": 4.3,
        "counters": {"offers": 1500, "acks": 1490, "dropped_overload_new": 10,
                     "dropped_stale": 2, "received": 3000}}
    values.update(overrides)
    return ProductFigures(**values)  # type: ignore[arg-type]


# --- command line ---------------------------------------------------------------------------


def test_by_default_all_servers_run_the_fast_path_with_one_follower() -> None:
    args = build_parser().parse_args([])
    assert selected_servers(args.only, args.reuse) == \
        ["kea", "kea-cache", "kea-pg", "leaseflow", "product"]
    assert args.reuse == 0.25
    assert (args.dora, args.followers, args.quick) == ("fast", 1, False)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--only", "kea"], ["kea"]),
    (["--only", "kea", "--only", "leaseflow"], ["kea", "leaseflow"]),
    (["--only", "product,kea"], ["product", "kea"]),
    (["--only", "kea, product", "--only", "kea"], ["kea", "product"]),
])
def test_only_takes_names_repeated_or_as_a_comma_list(argv: list[str],
                                                      expected: list[str]) -> None:
    assert selected_servers(build_parser().parse_args(argv).only) == expected


@pytest.mark.parametrize("argv", [
    ["--only", "dhcpd"], ["--only", "kea,dhcpd"], ["--only", ","], ["--dora", "slow"],
    ["--followers", "-1"], ["--followers", "many"],
])
def test_bad_values_are_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_product_options_and_quick() -> None:
    args = build_parser().parse_args(["--quick", "--only", "product", "--dora", "process",
                                      "--followers", "0"])
    assert (args.quick, args.dora, args.followers) == (True, "process", 0)


# --- plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [QUICK, FULL])
def test_the_product_plan_starts_low_and_gets_more_time(plan: Plan) -> None:
    fast, process = product_plan(plan, "fast"), product_plan(plan, "process")
    assert process.start_rate < fast.start_rate < plan.start_rate
    assert process.min_rate < plan.min_rate
    assert fast.budget > plan.budget
    assert (fast.seconds, fast.growth, fast.renew) == (plan.seconds, plan.growth, plan.renew)


def test_the_search_goes_below_the_default_floor_when_the_plan_says_so() -> None:
    calls: list[int] = []

    def measure(rate: int) -> tuple[Step, PerfdhcpRun]:
        calls.append(rate)
        return Step(rate=rate, completed=min(rate, 30),
                    drop_ratio=0.0 if rate <= 30 else 0.5), run_of(rate, 1.0)

    plan = product_plan(QUICK, "process")
    assert search_highest_rate(measure, QUICK, 80) is None  # the default floor: 100
    best = search_highest_rate(measure, plan, plan.start_rate)
    assert best is not None and best[0].rate == 20
    assert calls[-2:] == [40, 20]


# --- reaching PostgreSQL from a namespace ---------------------------------------------------


def test_the_test_database_url_comes_from_the_environment() -> None:
    assert base_database_url({}) == DEFAULT_DATABASE_URL
    url = "postgresql+psycopg://u@db:6543/x"
    assert base_database_url({"LEASEFLOW_TEST_DATABASE_URL": url}) == url


def test_the_socket_directory_is_the_first_that_holds_the_socket_file() -> None:
    files = {"/var/run/postgresql/.s.PGSQL.5432", "/tmp/.s.PGSQL.5432"}
    assert socket_directory("/var/run/postgresql", 5432, files.__contains__) == \
        "/var/run/postgresql"
    assert socket_directory("@abstract, /nowhere, /tmp", 5432, files.__contains__) == "/tmp"
    assert socket_directory("/var/run/postgresql", 5433, files.__contains__) is None
    assert socket_directory("", 5432, files.__contains__) is None


def test_the_socket_url_names_the_bench_database_through_the_directory() -> None:
    url = socket_url("postgresql+psycopg://postgres:s3cret@127.0.0.1:5433/test?sslmode=disable",
                     "/var/run/postgresql", "leaseflow_bench_dhcp")
    assert url.startswith("postgresql+psycopg://postgres:s3cret@:5433/leaseflow_bench_dhcp?")
    assert "host=%2Fvar%2Frun%2Fpostgresql" in url and "sslmode=disable" in url
    assert "127.0.0.1" not in url
    assert libpq_url(url).startswith("postgresql://postgres:s3cret@:5433/leaseflow_bench_dhcp")


# --- the server and its counters ------------------------------------------------------------


def test_process_mode_passes_no_flag_so_a_server_without_the_option_runs() -> None:
    assert dora_argv("fast") == ["--dora", "fast"]
    assert dora_argv("process") == []
    with pytest.raises(ValueError):
        dora_argv("slow")
    argv = server_argv("lfs1", "fast")
    assert argv[1:] == ["-m", "app.cli", "dhcp", "--interface", "lfs1", "--dora", "fast"]


def test_several_server_processes_are_asked_for_and_named() -> None:
    assert server_argv("lfs1", "fast", 2)[-2:] == ["--processes", "2"]
    assert "--processes" not in server_argv("lfs1", "fast", 1)
    assert product_name("fast", 2) == "Leaseflow product (fast DORA, PostgreSQL, 2 processes)"


def test_an_unknown_mode_is_refused_before_anything_starts(tmp_path: Path) -> None:
    namespace = Namespace(name="lfs-x", interface="lfsx", address="10.77.0.1/16")
    with pytest.raises(ValueError):
        ProductTarget(namespace, tmp_path, subnet="10.77.0.0/16", pool="a-b", dora="slow")
    target = ProductTarget(namespace, tmp_path, subnet="10.77.0.0/16", pool="a-b",
                           dora="process", followers=0)
    assert target.name == "Leaseflow product (process DORA, PostgreSQL)"
    assert not (tmp_path / "product").exists()


def test_counters_from_the_servers_last_line_become_figures() -> None:
    stdout = ("DHCP: listening on lfs1:67 as 10.77.0.1\n"
              '{"acks": 7, "dropped_overload_new": 25, "dropped_stale": 0, "offers": 14, '
              '"received": 60}\n')
    counters = server_counters(stdout)
    assert drop_counts(counters) == {"overload_new": 25}
    made = figures_from(counters, instances=8, started_at_exit=8, started=8, followers=1,
                        drain_seconds=0.01, waited_seconds=0.01)
    assert (made.offers, made.acks, made.drops, made.backlog) == (14, 7, 25, 0)


def test_a_server_that_printed_no_counters_counts_nothing() -> None:
    made = figures_from(server_counters("Traceback ...\n"), instances=0, started_at_exit=0,
                        started=0, followers=0, drain_seconds=None, waited_seconds=0.0)
    assert (made.offers, made.acks, made.drops) == (0, 0, 0)


# --- the followers' backlog -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def counting(clock: Clock, per_second: int, instances: int) -> Callable[[], tuple[int, int]]:
    """(instances, started) of followers that start `per_second` from clock 100."""
    return lambda: (instances, min(instances, int((clock.now - 100.0) * per_second)))


def test_the_drain_ends_when_every_instance_has_started() -> None:
    clock = Clock()
    instances, started, seconds = wait_for_starts(
        counting(clock, per_second=500, instances=1000), since=100.0, timeout=60,
        clock=clock, sleep=clock.sleep)
    assert (instances, started) == (1000, 1000)
    assert seconds == pytest.approx(2.0, abs=0.15)


def test_a_backlog_that_outlives_the_timeout_has_no_drain_time() -> None:
    clock = Clock()
    instances, started, seconds = wait_for_starts(
        counting(clock, per_second=10, instances=1000), since=100.0, timeout=5,
        clock=clock, sleep=clock.sleep)
    assert seconds is None and instances == 1000 and 40 <= started <= 55


def test_nothing_to_start_is_drained_at_once() -> None:
    clock = Clock()
    assert wait_for_starts(lambda: (0, 0), since=100.0, timeout=5, clock=clock,
                           sleep=clock.sleep) == (0, 0, 0.0)


# --- how the figures are shown --------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, "instances 1,490, 300 started when perfdhcp exited, all 4.30 s later (1 follower)"),
    ({"started_at_exit": 1490, "drain_seconds": 0.0},
     "instances 1,490, 1,490 started when perfdhcp exited (1 follower)"),
    ({"followers": 0, "started": 300, "drain_seconds": None},
     "300 started when perfdhcp exited, no followers: 1,190 wait in the outbox"),
    ({"followers": 0, "drain_seconds": None},
     "300 started when perfdhcp exited, the rest before the server exited (no followers)"),
    ({"followers": 2, "started": 900, "drain_seconds": None, "waited_seconds": 120.2},
     "instances 1,490, 300 started when perfdhcp exited, 590 still not started 120 s later "
     "(2 followers)"),
])
def test_the_figures_read_as_one_line(overrides: dict[str, object], expected: str) -> None:
    line = describe(figures(**overrides))
    assert line.startswith("server offers 1,500, acks 1,490, drops 12 "
                           "(overload_new 10, stale 2); dhcp_lease")
    assert expected in line


def test_the_product_row_has_its_figures_under_the_table_and_a_ratio_to_kea() -> None:
    text = render([
        ServerResult(server=KEA, new_leases_per_s=4000.0, new_drop_ratio=0.0,
                     renewals_per_s=3000.0),
        ServerResult(server=LeaseflowTarget.name, new_leases_per_s=2000.0, new_drop_ratio=0.0),
        ServerResult(server=FAST, new_leases_per_s=1000.0, new_offered_rate=1000,
                     new_drop_ratio=0.0, figures=figures(), figures_rate=1000),
    ], QUICK, 200.0)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith(FAST) and "1,000" in line
               and "server offers" not in line)
    assert row.split()[5] == "1,000"  # the new leases/s column, after the 5-word name
    assert (f"{FAST} at 1,000/s: server offers 1,500, acks 1,490, drops 12 "
            "(overload_new 10, stale 2); dhcp_lease instances 1,490") in text
    assert "Leaseflow / Kea: new leases 0.50 ×" in lines
    assert "Leaseflow product / Kea: new leases 0.25 ×" in lines
    assert any(line.startswith("product: the server's counters") for line in lines)


def test_a_product_with_no_passing_step_shows_the_last_ones_figures() -> None:
    text = render([ServerResult(server=FAST, figures=figures(), figures_rate=20)], QUICK, 60.0)
    assert f"{FAST} at 20/s (no step passed; the last one): server offers" in text
    assert "/ Kea" not in text


def test_the_json_of_a_product_result_has_its_figures() -> None:
    result = ServerResult(server=FAST, figures=figures(), figures_rate=500)
    data = json.loads(json.dumps([asdict(result)]))
    assert data[0]["figures"]["acks"] == 1490
    assert data[0]["figures"]["counters"]["dropped_stale"] == 2


# --- the figures follow the step they belong to ---------------------------------------------


def run_of(rate: int, completed_share: float) -> PerfdhcpRun:
    done = int(rate * completed_share)
    return PerfdhcpRun(seconds=1.0, target_rate=rate, started_rate=float(rate), returncode=0,
                       exchanges={DISCOVER_OFFER: ExchangeStats(sent=rate, received=rate,
                                                                drops=0),
                                  REQUEST_ACK: ExchangeStats(sent=rate, received=done,
                                                             drops=rate - done)})


class FakeProduct:
    """A target whose server completes `capacity` DORAs a second and says how many."""

    name = FAST
    uses_postgres = True

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rate = 0
        self.settled: list[int] = []

    def server_pids(self) -> list[int]:
        return [os.getpid()]  # the CPU meter reads this test's process

    def start(self) -> None: ...

    def fresh(self) -> None: ...

    def settle(self) -> ProductFigures:
        self.settled.append(self.rate)
        return figures(acks=min(self.rate, self.capacity), offers=self.rate)

    def stop(self) -> None: ...


def test_the_result_carries_the_figures_of_its_best_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeProduct(capacity=700)

    def fake_perfdhcp(_ns: object, *, rate: int, **_: object) -> PerfdhcpRun:
        target.rate = rate
        return run_of(rate, 1.0 if rate <= target.capacity else 0.5)

    monkeypatch.setattr("bench.dhcp.run_perfdhcp", fake_perfdhcp)
    plan = Plan(**asdict(product_plan(QUICK, "fast")) | {"renew": False})
    progress: list[str] = []
    client = Namespace(name="lfc-x", interface="lfcx", address="10.77.0.2/16")
    result = measure_server(target, client, plan, progress.append)
    assert result.new_offered_rate == 250 and result.figures_rate == 250
    assert result.figures is not None and result.figures.acks == 250
    assert target.settled[:2] == [250, 750]  # every step settled, the delay run too
    assert any("server offers 750" in line for line in progress)
    assert result.cpu_ms is not None  # CPU per lease of that step, from /proc
    assert all("CPU ms/lease" in line for line in progress if "new leases at" in line)
