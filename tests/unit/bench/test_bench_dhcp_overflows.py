"""Where a DHCP bench step lost datagrams: the namespaces' UDP RcvbufErrors, per step, and
the note under the table. Pure parts and a fake target: nothing here opens a socket."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from bench.dhcp import (
    QUICK,
    Overflows,
    Plan,
    ServerResult,
    Step,
    measure_server,
    overflow_note,
    render,
)
from bench.peers.netns import Namespace, parse_udp_counters
from bench.peers.perfdhcp import DISCOVER_OFFER, REQUEST_ACK, ExchangeStats, PerfdhcpRun
from lf_support import BenchTarget

_UDP_NAMES = ("InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors "
              "InCsumErrors IgnoredMulti MemErrors")
SNMP = (  # /proc/net/snmp as a namespace's kernel writes it (a part of it)
    "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 118706\n"
    f"Udp: {_UDP_NAMES}\nUdp: 117705 0 1001 118706 1001 0 0 0 0\n"
    f"UdpLite: {_UDP_NAMES}\nUdpLite: 0 0 0 0 0 0 0 0 0\n")


def test_the_udp_counters_are_read_from_proc_net_snmp() -> None:
    counters = parse_udp_counters(SNMP)
    assert counters["RcvbufErrors"] == 1001 and counters["InDatagrams"] == 117705
    assert counters["OutDatagrams"] == 118706  # UdpLite's line is another protocol's


@pytest.mark.parametrize("text", ["", "Udp: InDatagrams RcvbufErrors\n",
                                  "Udp: InDatagrams RcvbufErrors\nUdp: 1\n"])
def test_text_without_the_udp_counters_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="no Udp counters"):
        parse_udp_counters(text)


def test_the_note_counts_only_failed_steps_that_were_counted() -> None:
    steps = [
        Step(rate=1000, completed=1000.0, drop_ratio=0.0, overflows=Overflows(0, 7)),  # passed
        Step(rate=2000, completed=1900.0, drop_ratio=0.05, overflows=Overflows(0, 900)),
        Step(rate=3000, completed=2000.0, drop_ratio=0.3, overflows=Overflows(40, 0)),
        Step(rate=4000, completed=2000.0, drop_ratio=0.5),  # not counted
    ]
    assert overflow_note(steps) == ("1 of 2 failed steps lost replies in perfdhcp's receive "
                                    "buffer (900 datagrams); the server's sockets lost 40")
    assert overflow_note(steps[:1]) is None  # no failed step: nothing to say
    assert overflow_note(steps[3:]) is None


def test_overflows_subtract() -> None:
    assert Overflows(5, 1010) - Overflows(5, 9) == Overflows(0, 1001)


def test_each_step_says_where_its_datagrams_were_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    target = BenchTarget(capacity=1500)
    counted = Overflows(3, 40)  # what the namespaces counted before this server

    def fake_perfdhcp(_ns: object, *, rate: int, **_: object) -> PerfdhcpRun:
        nonlocal counted
        done = min(rate, target.capacity)
        if rate > target.capacity:  # the replies the client had no room for
            counted = Overflows(counted.server, counted.client + rate - done)
        return PerfdhcpRun(seconds=1.0, target_rate=rate, started_rate=float(rate),
                           returncode=0, exchanges={
                               DISCOVER_OFFER: ExchangeStats(sent=rate, received=rate, drops=0),
                               REQUEST_ACK: ExchangeStats(sent=rate, received=done,
                                                          drops=rate - done)})

    monkeypatch.setattr("bench.dhcp.run_perfdhcp", fake_perfdhcp)
    plan = Plan(**asdict(QUICK) | {"renew": False})
    progress: list[str] = []
    client = Namespace(name="lfc-x", interface="lfcx", address="10.77.0.2/16")
    result = measure_server(target, client, plan, progress.append, lambda: counted)
    steps = [line for line in progress if "new leases at" in line]
    assert "at 1000/s" in steps[0] and "server 0, perfdhcp 0)" in steps[0]
    assert "at 3000/s" in steps[1] and "server 0, perfdhcp 1,500)" in steps[1]
    assert result.overflows == ("1 of 1 failed steps lost replies in perfdhcp's receive "
                                "buffer (1,500 datagrams); the server's sockets lost 0")
    text = render([result], QUICK, 10.0)
    assert f"{target.name}: 1 of 1 failed steps" in text


def test_without_a_counter_nothing_is_said() -> None:
    result = ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=1000.0)
    assert "failed steps" not in render([result], QUICK, 10.0)
