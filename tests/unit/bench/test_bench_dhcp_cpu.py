"""What a DHCP bench step costs in CPU: the server's and perfdhcp's own, per new lease and
per renewal, in the result and in the table. A fake target and a fake perfdhcp: nothing
here opens a socket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import pytest

from bench.dhcp import QUICK, Plan, ServerResult, measure_server, per_ms, render
from bench.peers.cpu import CpuUse
from bench.peers.netns import Namespace
from bench.peers.perfdhcp import (
    DISCOVER_OFFER,
    RENEW_ACK,
    REQUEST_ACK,
    ExchangeStats,
    PerfdhcpRun,
)
from lf_support import BenchTarget

PERFDHCP_CPU = 0.3  # seconds of CPU each fake run says perfdhcp used


def fake_perfdhcp(capacity: int) -> Callable[..., PerfdhcpRun]:
    """perfdhcp against a server that completes `capacity` of each exchange a second."""

    def run(_ns: object, *, rate: int, renew_rate: int | None = None,
            **_: object) -> PerfdhcpRun:
        done = min(rate, capacity)
        exchanges = {DISCOVER_OFFER: ExchangeStats(sent=rate, received=rate, drops=0),
                     REQUEST_ACK: ExchangeStats(sent=rate, received=done, drops=rate - done)}
        if renew_rate:
            exchanges[RENEW_ACK] = ExchangeStats(sent=rate, received=done, drops=rate - done)
        return PerfdhcpRun(seconds=1.0, target_rate=rate, started_rate=float(rate),
                           returncode=0, exchanges=exchanges, cpu_seconds=PERFDHCP_CPU)
    return run


def test_both_searches_carry_the_cpu_of_their_best_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = BenchTarget(capacity=1500)
    monkeypatch.setattr("bench.dhcp.run_perfdhcp", fake_perfdhcp(target.capacity))
    plan = Plan(**asdict(QUICK) | {"seconds": 1.0})
    progress: list[str] = []
    client = Namespace(name="lfc-x", interface="lfcx", address="10.77.0.2/16")
    result = measure_server(target, client, plan, progress.append)
    # QUICK grows the rate threefold: 1,000 then 3,000 new leases/s; renewals from half the
    # best new-lease rate, 500, then 1,500 and 4,500.
    assert result.new_leases_per_s == 1000 and result.renewals_per_s == 1500
    # perfdhcp's 0.3 s of CPU per run, per lease and per renewal of the best steps
    assert result.perfdhcp_cpu_ms == pytest.approx(0.3)
    assert result.renew_perfdhcp_cpu_ms == pytest.approx(0.2)
    assert result.cpu_ms is not None and result.renew_cpu_ms is not None  # from /proc
    renewals = [line for line in progress if "renewals at" in line]
    assert renewals and all("CPU ms/renewal" in line and "perfdhcp's 0." in line
                            for line in renewals)


def test_the_table_shows_the_cpu_per_renewal_and_perfdhcps() -> None:
    result = ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=9000.0,
                          renewals_per_s=8000.0, cpu_ms=CpuUse(0.05, 0.0),
                          renew_cpu_ms=CpuUse(0.077, 0.0), perfdhcp_cpu_ms=0.061,
                          renew_perfdhcp_cpu_ms=0.134)
    text = render([result, ServerResult(server="broken", error="no perfdhcp")], QUICK, 10.0)
    header, _rule, row = text.splitlines()[1:4]
    assert header.split()[-4:] == ["CPU", "ms/renewal", "perfdhcp", "ms"]
    assert row.split()[-5:] == ["0.050", "0.077", "0.061", "/", "0.134"]
    assert "per lease / per renewal" in text


@pytest.mark.parametrize(("seconds", "exchanges", "expected"),
                         [(0.5, 1000.0, 0.5), (None, 1000.0, None), (0.5, 0.0, None)])
def test_cpu_per_exchange_needs_a_figure_and_an_exchange(
        seconds: float | None, exchanges: float, expected: float | None) -> None:
    assert per_ms(seconds, exchanges) == expected


def test_the_cpu_ratio_counts_the_database_and_needs_both_sides() -> None:
    kea = ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=9000.0,
                       cpu_ms=CpuUse(0.05, 0.0), renew_cpu_ms=CpuUse(0.08, 0.0))
    product = ServerResult(server="Leaseflow product (fast DORA, PostgreSQL, reuse 0.25)",
                           new_leases_per_s=4500.0, cpu_ms=CpuUse(0.15, 0.05),
                           renew_cpu_ms=CpuUse(0.1, 0.0))
    lines = render([kea, product], QUICK, 10.0).splitlines()
    assert "Leaseflow product / Kea: CPU 4.00 × per new lease, 1.25 × per renewal" in lines
    unmetered = ServerResult(server=kea.server, new_leases_per_s=9000.0)
    assert not any(": CPU " in line for line in render([unmetered, product], QUICK,
                                                        10.0).splitlines())
