"""The DHCP benchmark's pure parts: perfdhcp's report, its command line, the rate search."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from bench.dhcp import (
    FULL,
    QUICK,
    Plan,
    ServerResult,
    Step,
    lower_bound,
    render,
    search_highest_rate,
)
from bench.peers.netns import Namespace
from bench.peers.perfdhcp import (
    DISCOVER_OFFER,
    RENEW_ACK,
    REQUEST_ACK,
    PerfdhcpError,
    PerfdhcpRun,
    parse_report,
    percentile,
    perfdhcp_argv,
    run_perfdhcp,
)

# A real perfdhcp 2.2 report (-r 4 -f 2 -p 1 -x t against Kea), trimmed of nothing.
REPORT = """\
Running: perfdhcp -4 -r 4 -f 2 -p 1 -R 10 -W 300000 -x t -l 10.77.0.2 10.77.0.1
Scenario: basic.
Multi-thread mode enabled.
***Rate statistics***
Rate: 2.30683 4-way exchanges/second, expected rate: 4

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 3
received packets: 3
drops: 0
drops ratio: 0 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.661 ms
avg delay: 0.782 ms
max delay: 0.892 ms
std deviation: 0.095 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 3
received packets: 2
drops: 1
drops ratio: 33.333 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.189 ms
avg delay: 0.441 ms
max delay: 0.657 ms
std deviation: 0.193 ms
collected packets: 0

***Statistics for: REQUEST-ACK (renewal)***
sent packets: 0
received packets: 0
drops: 0
drops ratio: -nan %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: inf ms
avg delay: min delay: n/a
avg delay: n/a
max delay: n/a
std deviation: n/a
collected packets: 0

***Timestamps for packets: DISCOVER-OFFER***
sent / received: 000000.000104 / 000000.000765
sent / received: 000000.500139 / 000000.500931
sent / received: 000000.750169 / 000000.751061

***Timestamps for packets: REQUEST-ACK***
sent / received: 000000.000829 / 000000.001018
sent / received: 000000.502119 / 000000.502597

***Timestamps for packets: REQUEST-ACK (renewal)***
Unavailable! No packets received.
"""


def test_a_real_report_is_read() -> None:
    run = parse_report(REPORT, seconds=1.0, target_rate=4, returncode=3)
    assert run.started_rate == pytest.approx(2.30683)
    assert run.stats(DISCOVER_OFFER).sent == 3
    rack = run.stats(REQUEST_ACK)
    assert (rack.sent, rack.received, rack.drops) == (3, 2, 1)
    assert run.new_lease_rate == 2.0
    assert run.dora_drop_ratio == pytest.approx(1 / 3)
    assert run.stats(DISCOVER_OFFER).delays_ms == pytest.approx((0.661, 0.792, 0.892))
    assert rack.delays_ms == pytest.approx((0.189, 0.478))


def test_no_renewal_sent_counts_as_all_dropped() -> None:
    run = parse_report(REPORT, seconds=1.0, target_rate=4)
    assert run.stats(RENEW_ACK).sent == 0
    assert run.renew_drop_ratio == 1.0


def test_output_without_statistics_is_an_error() -> None:
    with pytest.raises(PerfdhcpError):
        parse_report("Error running perfdhcp: no such interface", seconds=1, target_rate=1)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([5.0], 99, 5.0),
        ([float(v) for v in range(1, 101)], 50, 50.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_command_line() -> None:
    argv = perfdhcp_argv(binary="perfdhcp", server="10.77.0.1", local="10.77.0.2", rate=2000,
                         seconds=3, clients=7200, renew_rate=2000)
    assert argv[0] == "perfdhcp" and argv[-1] == "10.77.0.1"
    joined = " ".join(argv)
    for part in ("-4", "-r 2000", "-p 3", "-R 7200", "-l 10.77.0.2", "-f 2000", "-x t"):
        assert part in joined
    quiet = perfdhcp_argv(binary="perfdhcp", server="s", local="l", rate=1, seconds=1,
                          clients=1, timestamps=False)
    assert "-x" not in quiet and "-f" not in quiet


def fake_server(capacity: int, noisy: frozenset[int] = frozenset()):
    """A measure() whose server completes up to `capacity`/s; `noisy` rates fail once."""
    calls: list[int] = []
    failed_once: set[int] = set()

    def measure(rate: int, timestamps: bool = False) -> tuple[Step, PerfdhcpRun]:
        calls.append(rate)
        drop = 0.0 if rate <= capacity else 1 - capacity / rate
        if rate in noisy and rate not in failed_once:
            failed_once.add(rate)
            drop = 0.05
        run = PerfdhcpRun(seconds=1, target_rate=rate, started_rate=rate, returncode=0)
        return Step(rate=rate, completed=min(rate, capacity), drop_ratio=drop), run

    return measure, calls


def test_search_grows_then_bisects_the_boundary() -> None:
    measure, calls = fake_server(capacity=5000)
    plan = Plan(seconds=1, start_rate=1000, growth=2.0, max_rate=100_000, bisections=3,
                retries=0, renew=False, budget=60)
    best = search_highest_rate(measure, plan, plan.start_rate)
    assert best is not None
    assert calls[:4] == [1000, 2000, 4000, 8000]
    assert 4000 <= best[0].rate <= 5000
    assert best[0].passed


def test_a_noisy_failure_is_repeated_once_the_boundary_is_near() -> None:
    measure, calls = fake_server(capacity=5000, noisy=frozenset({4000}))
    plan = Plan(seconds=1, start_rate=1000, growth=2.0, max_rate=100_000, bisections=0,
                retries=1, renew=False, budget=60)
    best = search_highest_rate(measure, plan, plan.start_rate)
    assert best is not None and best[0].rate == 4000
    assert calls.count(4000) == 2


def test_nothing_passes() -> None:
    measure, _ = fake_server(capacity=10)
    assert search_highest_rate(measure, QUICK, 1000) is None


def test_the_search_stops_at_the_plan_ceiling() -> None:
    measure, calls = fake_server(capacity=10**9)
    best = search_highest_rate(measure, FULL, FULL.start_rate)
    assert best is not None and max(calls) <= FULL.max_rate


def test_the_table_names_cores_and_both_servers() -> None:
    text = render([
        ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=4000.0,
                     new_drop_ratio=0.0, renewals_per_s=3000.0),
        ServerResult(server="Leaseflow (in-memory backend)", new_leases_per_s=2000.0,
                     new_drop_ratio=0.0005, renewals_per_s=3000.0),
    ], QUICK, 12.0)
    assert "cores" in text
    assert "4,000" in text and "2,000" in text
    assert "new leases 0.50 ×" in text and "renewals 1.00 × Kea" in text


def test_a_start_above_capacity_searches_downwards() -> None:
    measure, calls = fake_server(capacity=700)
    plan = Plan(seconds=1, start_rate=3000, growth=2.0, max_rate=100_000, bisections=2,
                retries=0, renew=False, budget=60)
    best = search_highest_rate(measure, plan, plan.start_rate)
    assert best is not None and best[0].passed
    assert calls[:3] == [3000, 1500, 750]
    assert 375 <= best[0].rate <= 700


def test_no_step_starts_after_the_deadline() -> None:
    measure, calls = fake_server(capacity=5000)
    assert search_highest_rate(measure, FULL, 1000, deadline=0.0) is None
    assert calls == []


def test_a_figure_no_faster_step_failed_is_a_floor() -> None:
    passed = Step(rate=10_000, completed=10_000.0, drop_ratio=0.0)
    slower_failure = Step(rate=8_000, completed=7_000.0, drop_ratio=0.2)  # noise below
    faster_failure = Step(rate=16_000, completed=12_000.0, drop_ratio=0.2)
    assert lower_bound(passed, [slower_failure, passed])
    assert not lower_bound(passed, [passed, faster_failure])


def test_the_table_marks_floors_and_bounds_the_ratio() -> None:
    text = render([
        ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=10_000.0,
                     new_drop_ratio=0.0, renewals_per_s=6000.0, new_lower_bound=True),
        ServerResult(server="Leaseflow (in-memory backend)", new_leases_per_s=5000.0,
                     new_drop_ratio=0.0, renewals_per_s=6000.0, renew_lower_bound=True),
    ], FULL, 12.0)
    assert "≥ 10,000" in text and "≥ 6,000" in text
    # Kea could do more: ours / Kea is at most 0.50; ours could renew more: at least 1.00.
    assert "new leases ≤ 0.50 ×" in text and "renewals ≥ 1.00 × Kea" in text
    assert f"ceiling of {FULL.max_rate:,}/s" in text


class BusyNamespace(Namespace):
    """Runs the command here, not in a namespace: a child that works a little, then prints
    perfdhcp's report."""

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        work = f"sum(range(3_000_000)); print({REPORT!r})"
        return subprocess.run([sys.executable, "-c", work], text=True, capture_output=True,
                              check=False)


def test_a_run_says_how_much_cpu_perfdhcp_itself_used() -> None:
    client = BusyNamespace(name="lfc-x", interface="lfcx", address="10.77.0.2/16")
    run = run_perfdhcp(client, server="10.77.0.1", rate=4, seconds=1.0, clients=10)
    assert run.stats(DISCOVER_OFFER).sent == 3  # the report was read as before
    assert run.cpu_seconds is not None and run.cpu_seconds > 0  # the child's, not ours
