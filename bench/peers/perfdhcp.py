"""ISC perfdhcp (from Debian's kea-admin) as a load generator, and a parser of its report.

Quirks that shape this module (see FIELD-NOTES):
- perfdhcp always sends relayed traffic (giaddr = its local address, from port 67), so the
  server's subnet must contain the client namespace's address;
- its `Rate:` line counts exchanges *started*; what a server completed is the REQUEST-ACK
  "received packets" divided by the run's length;
- it exits 3 whenever anything was dropped, so the exit code alone says nothing about the
  0.1 % threshold;
- `-x t` prints the sent/received timestamps of every successful exchange, from which exact
  delay percentiles are computed (the summary only has min/avg/max/std);
- renewals (`-f`) are sent in addition to the DORA rate and only to clients that completed a
  DORA, and perfdhcp refuses a renew rate above the exchange rate.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.peers.netns import Namespace

INSTALL_HINT = "install kea-admin, which ships perfdhcp (make test installs it)"

DISCOVER_OFFER = "DISCOVER-OFFER"
REQUEST_ACK = "REQUEST-ACK"
RENEW_ACK = "REQUEST-ACK (renewal)"


class PerfdhcpError(RuntimeError):
    """perfdhcp is missing, failed to run, or printed something we cannot read."""


@dataclass(frozen=True, kw_only=True)
class ExchangeStats:
    """One section of perfdhcp's report (an exchange kind, e.g. DISCOVER-OFFER)."""

    sent: int
    received: int
    drops: int
    delays_ms: tuple[float, ...] = ()  # per successful exchange, only with `-x t`

    @property
    def drop_ratio(self) -> float:
        return self.drops / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float | None:
        return percentile(self.delays_ms, q)


@dataclass(frozen=True, kw_only=True)
class PerfdhcpRun:
    """What one perfdhcp run measured."""

    seconds: float
    target_rate: int
    started_rate: float  # the `Rate:` line: exchanges started per second
    returncode: int
    exchanges: dict[str, ExchangeStats] = field(default_factory=dict)
    # perfdhcp's own user + system CPU seconds (None: not measured). It shares the machine's
    # cores with the server, and at these rates it needs as much CPU as Kea or more.
    cpu_seconds: float | None = None

    def stats(self, kind: str) -> ExchangeStats:
        return self.exchanges.get(kind, ExchangeStats(sent=0, received=0, drops=0))

    @property
    def new_lease_rate(self) -> float:
        """DORAs completed per second: REQUEST-ACK received over the run's length."""
        return self.stats(REQUEST_ACK).received / self.seconds

    @property
    def renew_rate(self) -> float:
        return self.stats(RENEW_ACK).received / self.seconds

    @property
    def dora_drop_ratio(self) -> float:
        """Exchanges started (DISCOVER sent) that never got their ACK."""
        started = self.stats(DISCOVER_OFFER).sent
        if not started:
            return 1.0
        return max(0, started - self.stats(REQUEST_ACK).received) / started

    @property
    def renew_drop_ratio(self) -> float:
        renew = self.stats(RENEW_ACK)
        return renew.drop_ratio if renew.sent else 1.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


_SECTION = re.compile(r"^\*\*\*Statistics for: (.+)\*\*\*$")
_TIMESTAMPS = re.compile(r"^\*\*\*Timestamps for packets: (.+)\*\*\*$")
_FIELD = re.compile(r"^(sent packets|received packets|drops): (\d+)$")
_STAMP = re.compile(r"^sent / received: ([\d.]+) / ([\d.]+)$")
_RATE = re.compile(r"^Rate: ([\d.]+) ")


def parse_report(
    text: str, *, seconds: float, target_rate: int, returncode: int = 0
) -> PerfdhcpRun:
    """perfdhcp's stdout → a `PerfdhcpRun` (pure)."""
    counts: dict[str, dict[str, int]] = {}
    delays: dict[str, list[float]] = {}
    started = 0.0
    section: str | None = None
    stamps: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if match := _RATE.match(line):
            started = float(match.group(1))
        elif match := _SECTION.match(line):
            section, stamps = match.group(1), None
            counts[section] = {}
        elif match := _TIMESTAMPS.match(line):
            section, stamps = None, match.group(1)
            delays.setdefault(stamps, [])
        elif section and (match := _FIELD.match(line)):
            counts[section][match.group(1)] = int(match.group(2))
        elif stamps and (match := _STAMP.match(line)):
            sent, received = float(match.group(1)), float(match.group(2))
            delays[stamps].append((received - sent) * 1000.0)
    if not counts:
        raise PerfdhcpError(f"no statistics in perfdhcp output: {text[-500:]!r}")
    exchanges = {
        kind: ExchangeStats(
            sent=values.get("sent packets", 0),
            received=values.get("received packets", 0),
            drops=values.get("drops", 0),
            delays_ms=tuple(delays.get(kind, ())),
        )
        for kind, values in counts.items()
    }
    return PerfdhcpRun(seconds=seconds, target_rate=target_rate, started_rate=started,
                       returncode=returncode, exchanges=exchanges)


def find_perfdhcp() -> str:
    path = shutil.which("perfdhcp") or next(
        (p for p in ("/usr/sbin/perfdhcp", "/usr/bin/perfdhcp") if shutil.which(p)), None
    )
    if path is None:
        raise PerfdhcpError(f"perfdhcp not found: {INSTALL_HINT}")
    return path


def perfdhcp_argv(
    *,
    binary: str,
    server: str,
    local: str,
    rate: int,
    seconds: float,
    clients: int,
    renew_rate: int | None = None,
    timestamps: bool = True,
    drop_time: float = 1.0,
    exit_wait_us: int = 300_000,
) -> list[str]:
    """The command line of one fixed-rate run (pure)."""
    argv = [binary, "-4", "-r", str(rate), "-p", f"{seconds:g}", "-R", str(clients),
            "-d", f"{drop_time:g}",
            # Wait for answers to the last packets instead of counting them as drops.
            "-W", str(exit_wait_us),
            "-l", local]
    if renew_rate:
        argv += ["-f", str(renew_rate)]
    if timestamps:
        argv += ["-x", "t"]
    return [*argv, server]


def run_perfdhcp(
    namespace: Namespace,
    *,
    server: str,
    rate: int,
    seconds: float,
    clients: int,
    renew_rate: int | None = None,
    timestamps: bool = True,
) -> PerfdhcpRun:
    """One perfdhcp run from inside `namespace` (the client side) against `server`."""
    argv = perfdhcp_argv(binary=find_perfdhcp(), server=server, local=namespace.ip, rate=rate,
                         seconds=seconds, clients=clients, renew_rate=renew_rate,
                         timestamps=timestamps)
    before = _children_cpu()
    try:
        done = namespace.run(argv, timeout=seconds + 30)
    except subprocess.TimeoutExpired as exc:
        raise PerfdhcpError(f"perfdhcp did not finish: {' '.join(argv)}") from exc
    cpu = _children_cpu() - before  # `ip netns exec` execs perfdhcp: one child, reaped here
    # 0 = nothing dropped, 3 = something dropped; anything else is a real failure.
    if done.returncode not in (0, 3):
        raise PerfdhcpError(f"perfdhcp exited {done.returncode}: {done.stderr[-500:]}")
    return replace(parse_report(done.stdout, seconds=seconds, target_rate=rate,
                                returncode=done.returncode), cpu_seconds=cpu)


def _children_cpu() -> float:
    """User + system CPU seconds of this process's children that ended and were waited for."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
