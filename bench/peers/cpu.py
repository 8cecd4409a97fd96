"""CPU time of the processes a benchmark step keeps busy, read from /proc (Linux).

A rate says how much a server does on this machine; CPU time per exchange says what each
exchange costs, whatever the number of cores: the figure that tells whether a server that
scales over processes would catch up on a bigger machine. `Meter` takes the CPU time
(user + system, every thread) of a server's process tree and of the PostgreSQL cluster
before and after a step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, proc: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text.rsplit(")", 1)[1].split()


def _pids(proc: Path) -> list[int]:
    return [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]


def process_tree(roots: Iterable[int], proc: Path = PROC) -> set[int]:
    """`roots` and every process descended from them."""
    parent: dict[int, int] = {}
    for pid in _pids(proc):
        fields = _stat(pid, proc)
        if fields is not None:
            parent[pid] = int(fields[1])
    tree = set(roots)
    grew = True
    while grew:
        found = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= found
        grew = bool(found)
    return tree


def named(command: str, proc: Path = PROC) -> set[int]:
    """The processes whose command name (/proc/PID/comm) is `command`."""
    found = set()
    for pid in _pids(proc):
        try:
            if (proc / str(pid) / "comm").read_text().strip() == command:
                found.add(pid)
        except OSError:
            continue
    return found


def cpu_seconds(pids: Iterable[int], proc: Path = PROC) -> float:
    """User + system CPU seconds the processes used so far (all their threads)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid, proc)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _TICKS


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds a step used: the server's processes, and the database's (0 without)."""

    server: float
    database: float

    @property
    def total(self) -> float:
        return self.server + self.database

    def per(self, exchanges: float) -> CpuUse | None:
        """Milliseconds per exchange, or None when nothing completed."""
        if exchanges <= 0:
            return None
        return CpuUse(server=self.server * 1e3 / exchanges,
                      database=self.database * 1e3 / exchanges)


class Meter:
    """CPU time of a server (its root processes, found again at each reading, and their
    descendants) and, where `database` is set, of every `postgres` process.

    Processes that end during a step take their CPU time with them (a reading sees only
    the living): the servers measured here live through their steps.
    """

    def __init__(self, roots: Callable[[], Iterable[int]], *, database: bool,
                 proc: Path = PROC) -> None:
        self._roots = roots
        self._database = database
        self._proc = proc
        self._start: tuple[dict[int, float], dict[int, float]] | None = None

    def _reading(self) -> tuple[dict[int, float], dict[int, float]]:
        server = {pid: cpu_seconds([pid], self._proc)
                  for pid in process_tree(self._roots(), self._proc)}
        database = {pid: cpu_seconds([pid], self._proc)
                    for pid in (named("postgres", self._proc) if self._database else ())}
        return server, database

    def start(self) -> None:
        self._start = self._reading()

    def stop(self) -> CpuUse:
        """CPU seconds since `start`, counting processes born meanwhile from zero."""
        assert self._start is not None, "Meter.stop() before start()"
        (server0, database0), (server1, database1) = self._start, self._reading()
        return CpuUse(server=sum(t - server0.get(pid, 0.0) for pid, t in server1.items()),
                      database=sum(t - database0.get(pid, 0.0)
                                   for pid, t in database1.items()))
