"""Fixtures for the process-driven DHCP server against real clients.

Our server runs in this test process (so the test sees its database, worker and waiters
directly): `DhcpServer` + `ProcessLeaseBackend` on the embedded default (SQLite, in-process
worker, a ticker for the timers). Only its socket lives in the server namespace: a helper
thread enters the namespace (setns), opens the socket there and leaves; a socket stays in
the namespace it was made in. The real client runs in the client namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from bench.peers.netns import Namespace

SERVER_ADDRESS = "10.77.0.1/24"
SUBNET = "10.77.0.0/24"
POOL = "10.77.0.100-10.77.0.199"
CLONE_NEWNET = 0x40000000


def socket_in(ns: Namespace, port: int = 67) -> Any:
    """A DHCP server socket on `ns.interface`, created inside namespace `ns`."""
    from app.dhcp.server import open_socket

    made: list[Any] = []
    failed: list[BaseException] = []

    def enter_and_open() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {ns.name} failed")
            made.append(open_socket(ns.interface, port))
        except BaseException as exc:  # reported to the test below
            failed.append(exc)
        finally:
            os.close(fd)

    # A thread of its own: only that thread changes namespace, and it ends right after.
    thread = threading.Thread(target=enter_and_open)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


@pytest.fixture
def start_server(app: Flask, dhcp_network) -> Iterator[Callable[..., Any]]:
    """start(lease_time=600): the subnet in the database, then our server on it."""
    from app.cli import _start_ticker
    from app.dhcp.process_backend import start_server as start
    from app.dhcp.process_backend import stop_server
    from app.services import subnets
    from app.services.uow import unit_of_work

    stop = threading.Event()
    servers: list[Any] = []
    sockets: list[Any] = []

    def make(lease_time: int = 600, renewal_time: int | None = None,
             dora: str = "process") -> Any:
        """`renewal_time`: a T1 shorter than the subnets allow (60 s at least), so a test
        sees clients renew within seconds; `dora`: the server's DORA path."""
        from dataclasses import replace

        from app.dhcp.process_backend import ProcessLeaseBackend, server_config
        from app.dhcp.server import DhcpServer

        with app.app_context(), unit_of_work():
            subnets.create({"cidr": SUBNET, "pools": [POOL], "gateway": "10.77.0.1",
                            "dns": ["10.77.0.53"], "lease_time": lease_time}, actor="test")
        ns = dhcp_network[0]
        sockets.append(socket_in(ns))
        if renewal_time is None:
            server = start(app, interface=ns.interface, sock=sockets[-1], server_id=ns.ip,
                           patience=10.0, dora=dora)
        else:
            config = server_config(app, interface=ns.interface, server_id=ns.ip)
            config = replace(config, subnets=tuple(
                replace(s, renewal_time=renewal_time, rebinding_time=renewal_time * 2)
                for s in config.subnets))
            if dora == "fast":
                from app.dhcp.fast_backend import FastLeaseBackend

                backend: ProcessLeaseBackend = FastLeaseBackend(app, patience=10.0)
            else:
                backend = ProcessLeaseBackend(app, patience=10.0)
            server = DhcpServer(interface=ns.interface, config=config, sock=sockets[-1],
                                backend=backend)
            server.start()
        servers.append(server)
        _start_ticker(app, stop)  # the offer and lease timers, as `leaseflow dhcp` runs them
        return server

    try:
        yield make
    finally:
        stop.set()
        for server in servers:
            stop_server(server)  # also ends a fast backend's group commit
        for sock in sockets:  # given to the servers, so ours to close
            sock.close()
