"""bench.peers.cpu: CPU time of a server's process tree and of PostgreSQL, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.dhcp import FULL, ServerResult, render
from bench.peers.cpu import CpuUse, Meter, cpu_seconds, named, process_tree

TICKS = os.sysconf("SC_CLK_TCK")


def _process(proc: Path, pid: int, *, parent: int, comm: str, utime: int,
             stime: int) -> None:
    """A /proc/PID entry as Linux writes it (a command name with a space and a paren)."""
    entry = proc / str(pid)
    entry.mkdir(exist_ok=True)
    fields = ["S", str(parent)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 10
    (entry / "stat").write_text(f"{pid} ({comm} x) y) " + " ".join(fields) + "\n")
    (entry / "comm").write_text(comm + "\n")


def test_a_tree_is_its_roots_and_their_descendants(tmp_path: Path) -> None:
    for pid, parent in ((10, 1), (11, 10), (12, 11), (13, 1), (14, 13)):
        _process(tmp_path, pid, parent=parent, comm="leaseflow", utime=0, stime=0)
    assert process_tree([10], tmp_path) == {10, 11, 12}
    assert process_tree([10, 13], tmp_path) == {10, 11, 12, 13, 14}


def test_cpu_is_user_plus_system_of_the_living(tmp_path: Path) -> None:
    _process(tmp_path, 20, parent=1, comm="postgres", utime=3 * TICKS, stime=TICKS)
    _process(tmp_path, 21, parent=1, comm="kea-dhcp4", utime=TICKS, stime=0)
    assert cpu_seconds([20, 21, 99], tmp_path) == 5.0  # 99 is gone: nothing
    assert named("postgres", tmp_path) == {20}


def test_the_meter_counts_what_a_step_used(tmp_path: Path) -> None:
    _process(tmp_path, 30, parent=1, comm="python", utime=TICKS, stime=0)
    _process(tmp_path, 40, parent=1, comm="postgres", utime=TICKS, stime=0)
    meter = Meter(lambda: [30], database=True, proc=tmp_path)
    meter.start()
    _process(tmp_path, 30, parent=1, comm="python", utime=3 * TICKS, stime=TICKS)
    _process(tmp_path, 31, parent=30, comm="python", utime=TICKS, stime=0)  # forked since
    _process(tmp_path, 40, parent=1, comm="postgres", utime=2 * TICKS, stime=0)
    used = meter.stop()
    assert used == CpuUse(server=4.0, database=1.0)
    assert used.per(2000) == CpuUse(server=2.0, database=0.5)  # ms per exchange
    assert used.per(0) is None
    without = Meter(lambda: [30], database=False, proc=tmp_path)
    without.start()
    assert without.stop().database == 0.0


def test_the_real_proc_finds_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert child.pid in process_tree([os.getpid()])
        assert cpu_seconds([os.getpid()]) > 0  # this interpreter has run
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_the_table_shows_cpu_per_lease() -> None:
    text = render([
        ServerResult(server="Kea 2.2 (memfile, 1 thread)", new_leases_per_s=9000.0,
                     new_drop_ratio=0.0, cpu_ms=CpuUse(server=0.0712, database=0.0)),
        ServerResult(server="Leaseflow product (fast DORA)", new_leases_per_s=3000.0,
                     new_drop_ratio=0.0, cpu_ms=CpuUse(server=0.3011, database=0.1419)),
    ], FULL, 60.0)
    assert "CPU ms/lease" in text
    assert "0.071" in text and "0.071 +" not in text
    assert "0.301 + 0.142 db" in text
