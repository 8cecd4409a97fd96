"""Several server processes on one port (`leaseflow dhcp --processes N`).

One Python process answers about one core's worth of exchanges (the GIL). This parent
opens N sockets on the port as one `SO_REUSEPORT` group, the kernel steering each client to
one of them by chaddr (`app.dhcp.steering`), then forks one child per socket. Each child
builds its own application (its own database connections) and serves its socket as
`Shard(i, N)`; the database decides every conflict between them as between any servers
sharing it.

The parent holds every socket open while it runs (the kernel renumbers a group when one of
its sockets closes, which would move clients between processes). It reports ready once
every child is, stops them all on SIGTERM or SIGINT, and returns their counters summed. A
child that exits on its own stops the rest: a supervisor (systemd, Kubernetes) restarts
the whole server, and no client is left with a process that no longer answers it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO

from app.dhcp.errors import DhcpError
from app.dhcp.server import open_group
from app.dhcp.steering import Shard

# serve(sock, shard, ready, stop) runs in a child until `stop` is set; returns its counters.
Serve = Callable[[socket.socket, Shard, Callable[[], None], threading.Event], dict[str, int]]
POLL = 0.2  # seconds between looks at the children and the stop flag


class ProcessFailed(DhcpError):
    """A server process exited on its own (or never got ready)."""


class _Child:
    def __init__(self, pid: int, pipe: IO[str]) -> None:
        self.pid = pid
        self.pipe = pipe
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.status


def run(interface: str, port: int, count: int, serve: Serve, *,
        on_ready: Callable[[], None], stop: threading.Event) -> dict[str, int]:
    """Serve with `count` processes until `stop` is set; their counters, summed."""
    if threading.active_count() > 1:  # a thread's locks would be copied held into children
        raise DhcpError("the server's processes must be forked before any thread starts")
    socks = open_group(interface, port, count)
    children: list[_Child] = []
    try:
        for index in range(count):
            children.append(_fork(index, socks, serve))
        if not _await_ready(children, stop):
            return {}  # stopped while starting: nothing served, nothing to count
        on_ready()
        while not stop.is_set():
            for index, child in enumerate(children):
                if child.poll() is not None:
                    raise ProcessFailed(f"DHCP process {index} exited with {child.status}")
            time.sleep(POLL)  # sleep, not stop.wait(): see cli.cmd_dhcp
        return _collect(children)
    finally:
        _signal([child for child in children if child.poll() is None], signal.SIGTERM)
        for child in children:
            if child.wait(10) is None:
                _signal([child], signal.SIGKILL)
                child.wait(5)
            child.pipe.close()
        for sock in socks:
            sock.close()


def _await_ready(children: list[_Child], stop: threading.Event) -> bool:
    """True once every child said it is ready; False if `stop` came first."""
    waiting = dict(enumerate(children))
    while waiting:
        if stop.is_set():
            return False
        readable, _, _ = select.select([c.pipe for c in waiting.values()], [], [], POLL)
        for index, child in list(waiting.items()):
            if child.pipe not in readable:
                continue
            if child.pipe.readline().strip() != "ready":
                raise ProcessFailed(f"DHCP process {index} exited before it was ready "
                                    f"(code {child.wait(5)})")
            del waiting[index]
    return True


def _signal(children: list[_Child], sig: int) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(child.pid, sig)


def _collect(children: list[_Child]) -> dict[str, int]:
    _signal(children, signal.SIGTERM)
    total: Counter[str] = Counter()
    for index, child in enumerate(children):
        line = child.pipe.readline()
        if not line:
            raise ProcessFailed(f"DHCP process {index} exited with {child.wait(10)} "
                                "without its counters")
        total.update(json.loads(line))
    return dict(total)


def _fork(index: int, socks: list[socket.socket], serve: Serve) -> _Child:
    read, write = os.pipe()
    sys.stdout.flush()  # or the child would print what the parent had buffered
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(write)
        return _Child(pid, os.fdopen(read, "r"))
    # -- the child: never returns into the parent's code --------------------------------
    code = 1
    try:
        os.close(read)
        for i, sock in enumerate(socks):
            if i != index:
                sock.close()  # the parent's copy keeps it in the group
        code = _child(socks[index], Shard(index, len(socks)), serve, os.fdopen(write, "w"))
    except BaseException as exc:  # one line, as every CLI error
        with contextlib.suppress(Exception):
            print(f"error: DHCP process {index}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _child(sock: socket.socket, shard: Shard, serve: Serve, pipe: IO[str]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready() -> None:
        pipe.write("ready\n")
        pipe.flush()

    counters = serve(sock, shard, ready, stop)
    pipe.write(json.dumps(counters) + "\n")
    pipe.flush()
    return 0
