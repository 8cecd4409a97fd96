"""`app.dhcp.processes`: a group of forked servers is ready only when each is, stops
together, sums its counters, and a child that dies takes the group down with a clear error.

Each case runs in a fresh interpreter: the group forks, which a test process holding other
tests' threads must not do (and `run` refuses).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PRELUDE = """
import os, signal, sys, threading, time
from app.dhcp import processes

stop = threading.Event()
def ready_then_stop():
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGUSR1)  # the parent's own stop, once all are ready
signal.signal(signal.SIGUSR1, lambda *_: stop.set())
"""


def run(body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_the_group_is_ready_when_all_are_and_sums_their_counters() -> None:
    done = run("""
        def serve(sock, shard, ready, done):
            ready()
            while not done.is_set():
                time.sleep(0.01)
            return {"acks": shard.index + 1, "shard_" + str(shard.index): 1}
        print(processes.run("lo", 0, 3, serve, on_ready=ready_then_stop, stop=stop))
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ready"
    assert eval(lines[1]) == {"acks": 6, "shard_0": 1, "shard_1": 1, "shard_2": 1}  # noqa: S307


def test_a_child_that_fails_at_start_stops_the_group_with_one_line() -> None:
    done = run("""
        def serve(sock, shard, ready, done):
            if shard.index == 1:
                raise RuntimeError("no database")
            ready()
            while not done.is_set():
                time.sleep(0.01)
            return {}
        try:
            processes.run("lo", 0, 2, serve, on_ready=ready_then_stop, stop=stop)
        except processes.ProcessFailed as exc:
            print("failed:", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "failed: DHCP process 1 exited before it was ready (code 1)"
    assert done.stderr.strip() == "error: DHCP process 1: no database"


def test_a_child_that_dies_while_serving_stops_the_group() -> None:
    done = run("""
        def serve(sock, shard, ready, done):
            ready()
            if shard.index == 0:
                os._exit(3)
            while not done.is_set():
                time.sleep(0.01)
            return {}
        try:
            processes.run("lo", 0, 2, serve, on_ready=lambda: None, stop=stop)
        except processes.ProcessFailed as exc:
            print("failed:", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "failed: DHCP process 0 exited with 3"


def test_the_group_refuses_to_fork_beside_a_running_thread() -> None:
    done = run("""
        threading.Thread(target=stop.wait, daemon=True).start()
        try:
            processes.run("lo", 0, 2, lambda *a: {}, on_ready=lambda: None, stop=stop)
        except processes.DhcpError as exc:
            print("refused:", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == \
        "refused: the server's processes must be forked before any thread starts"


def test_a_stop_while_a_child_is_still_starting_ends_the_group() -> None:
    done = run("""
        def serve(sock, shard, ready, done):
            if shard.index == 0:
                ready()
            while not done.is_set():  # the other never gets ready
                time.sleep(0.01)
            return {}
        signal.signal(signal.SIGALRM, lambda *_: stop.set())
        signal.alarm(1)
        print(processes.run("lo", 0, 2, serve, on_ready=lambda: print("ready"), stop=stop))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}"
