"""`ProcessLeaseBackend`: the DHCP server's leases come from the `dhcp_lease` process.

This is Leaseflow's real `LeaseBackend` (the memory one is for tests and benchmarks). It is
an edge, like an API view: each call opens a unit of work, calls one use case of
`app.services.dhcp`, and, where the process must act first, waits for the instance through
`dispatch.WAITERS` — never holding a transaction while it waits.

- DISCOVER starts the client's instance (or finds the one already running) and waits, at
  most `patience` seconds (the client's patience: it retransmits after ~2-4 s), until the
  reservation exists; then OFFER. Nothing in time means silence, never a wrong reply.
- REQUEST (SELECTING) is the message `dhcp_request`; ACK only once the lease is `bound` in
  the database, NAK when the instance refused, silence when it is not done in time (the
  client retransmits; the retransmission finds the commit under way and waits again).
- Renewals of a bound lease (INIT-REBOOT, RENEWING, REBINDING) take the fast path: the
  expiry moves in one unit of work here, plus a `lease_renew` message; no worker queue.
- RELEASE, DECLINE and an offer taken elsewhere are messages (`lease_release`,
  `dhcp_decline`, `dhcp_forget`); the instance frees the address.

By default the server runs the jobs its own step parked (the reservation, the commit) in
the same transaction, as a worker's run-ahead does: a DORA then needs no worker round trip
(`run_ahead=False` sends them through the worker queue and waits, as any other edge does).

On SQLite the server's threads take turns for the database on one lock of their own (per
app). SQLite admits one writer at a time, every transaction here begins IMMEDIATE, and its
busy handler polls with sleeps of up to 100 ms: a dozen worker threads waiting there get
their turn late and unfairly (some for seconds, past the client's patience) while the
database sits idle. Queued on a Python lock they are handed the database at once, in turn.
Nothing is lost: SQLite would have run their transactions one by one anyway.

Several server processes may share one database: two clients never get one address because
the database's partial unique index refuses a second holder, whoever inserts it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from app.dhcp.backend import Binding, BindingState, Client, LeaseBackend, Refusal
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.errors import ConfigError
from app.dhcp.handler import Counters
from app.dhcp.server import DhcpServer
from app.dhcp.steering import Shard

if TYPE_CHECKING:
    from flask import Flask

    from app.services.dhcp import InstanceView, LeaseView

log = logging.getLogger(__name__)
DEFAULT_PATIENCE = 2.0

_STATES: dict[str, BindingState] = {"offered": "offered", "bound": "bound",
                                    "released": "released", "expired": "expired",
                                    "declined": "released", "abandoned": "released"}


def _hwaddr(client: Client) -> str | None:
    return client.chaddr.hex(":") or None


class ProcessLeaseBackend:
    """`LeaseBackend` over the lease process; thread-safe (one app context per call)."""

    def __init__(self, app: Flask, *, patience: float = DEFAULT_PATIENCE,
                 offer_lifetime: float = 30.0, actor: str = "dhcp",
                 run_ahead: bool = True) -> None:
        self.app = app
        # run_ahead: the reservation and the commit run in the server's own transaction
        # (as a worker's run-ahead would), so a DORA needs no worker round trip; off, they
        # travel through the worker queue and the server waits for them.
        self.run_ahead = run_ahead
        self.patience = patience
        self.offer_lifetime = offer_lifetime
        self.actor = actor
        # One turn at a time on SQLite, shared by every backend of this app (see above).
        self._turn: AbstractContextManager[Any] = contextlib.nullcontext()
        if str(app.config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite"):
            self._turn = app.extensions.setdefault("leaseflow_dhcp_turn", threading.RLock())

    def close(self) -> None:
        """Nothing to release here; the fast path's backend ends its group commit."""

    # -- plumbing ------------------------------------------------------------------------------

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read in its own short transaction (ended at once: SQLite locks at BEGIN)."""
        from app.extensions import db

        with self._turn:
            try:
                return fn(*args)
            finally:
                db.session.rollback()

    def _change(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from app.services.uow import unit_of_work

        with self._turn, unit_of_work():
            return fn(*args, **kwargs)

    def _step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`_change`, then (with `run_ahead`) the jobs it parked, in the same transaction."""
        from app.services import dhcp
        from app.services.uow import unit_of_work

        with self._turn, unit_of_work():
            result = fn(*args, **kwargs)
            if self.run_ahead:
                dhcp.run_parked()
            return result

    def _wait(self, instance_id: int,
              done: Callable[[InstanceView], bool]) -> InstanceView | None:
        """Wait (at most `patience`) until `done(view)`; the last view seen either way."""
        from app.services import dhcp
        from app.services.dispatch import WAITERS

        seen: list[InstanceView] = []

        def check() -> bool:
            view = self._read(dhcp.observe, instance_id)
            seen[:] = [view]
            return done(view)

        WAITERS.wait(instance_id, check, self.patience)
        return seen[0] if seen else None

    @staticmethod
    def _binding(client: Client, lease: LeaseView, lease_time: int | None = None) -> Binding:
        return Binding(address=lease.address, client_id=client.client_id,
                       lease_time=lease_time if lease_time is not None
                       else max(1, lease.seconds_left()),
                       state=_STATES.get(lease.state, "released"), hostname=lease.hostname)

    # -- LeaseBackend ----------------------------------------------------------------------------

    def offer(self, client: Client, requested: str | None, now: float) -> Binding | None:
        from app.services import dhcp

        cid = dhcp.client_key(client.client_id)
        cidr = client.subnet.cidr
        with self.app.app_context():
            lease, instance_id = self._read(dhcp.client_state, cidr, cid)
            if lease is not None:
                # A retransmitted DISCOVER, or a bound client starting over: same address.
                if lease.state == "offered":
                    return self._binding(client, lease, client.subnet.lease_time)
                return self._binding(client, lease)
            if instance_id is None:
                instance_id = self._step(
                    dhcp.start, subnet=cidr, client_id=cid, hwaddr=_hwaddr(client),
                    hostname=client.hostname, requested_ip=requested,
                    offer_lifetime=self.offer_lifetime, actor=self.actor)
            view = self._wait(instance_id, lambda v: v.ended or v.lease is not None)
            if view is not None and view.lease is not None and view.lease.state == "offered":
                return self._binding(client, view.lease, client.subnet.lease_time)
            if view is not None and view.ended:
                # e.g. two servers started an instance each; the other one holds the offer.
                lease = self._read(dhcp.holding, cidr, cid)
                if lease is not None and lease.state == "offered":
                    return self._binding(client, lease, client.subnet.lease_time)
                log.info("no offer for %s: %s", cid, view.outcome.get("reason"))
            return None

    def commit(self, client: Client, address: str, now: float) -> Binding | Refusal:
        result = self._request(client, address)
        # None: the process did not finish in time; the server stays silent and the client
        # retransmits its REQUEST (the LeaseBackend port has no "silent" commit, but the
        # server's answer() treats None as "no record", which is silence when not
        # authoritative).
        return result  # type: ignore[return-value]

    def _request(self, client: Client, address: str) -> Binding | Refusal | None:
        """Bind `address` for the client through its instance (start one if needed)."""
        from app.services import dhcp

        cid = dhcp.client_key(client.client_id)
        cidr = client.subnet.cidr
        with self.app.app_context():
            lease = self._read(dhcp.holding, cidr, cid)
            if lease is not None and lease.address != address:
                return Refusal(reason="not the address offered to this client")
            if lease is not None and lease.state == "bound":
                return self._fast_renew(client, lease)
            if lease is None:
                if not client.subnet.in_pool(address):
                    return Refusal(reason="address not in the pool")
                holder = self._read(dhcp.holder_of, cidr, address)
                if holder is not None:
                    return Refusal(reason="address held by another client")
                instance_id = self._read(dhcp.pending_instance, cidr, cid)
                if instance_id is None:
                    instance_id = self._step(
                        dhcp.start, subnet=cidr, client_id=cid, hwaddr=_hwaddr(client),
                        hostname=client.hostname, requested_ip=address, exact=True,
                        offer_lifetime=self.offer_lifetime, actor=self.actor)
                view = self._wait(instance_id, lambda v: v.ended or v.lease is not None)
                if view is None or view.lease is None:
                    if view is not None and view.ended:
                        return Refusal(reason=str(view.outcome.get("reason") or "refused"))
                    return None
                lease = view.lease
                if lease.address != address:
                    self._change(dhcp.tell, instance_id, "dhcp_forget", {"reason": "abandon"},
                                 actor=self.actor)
                    return Refusal(reason="address not available")
            if lease.instance_id is None:
                return Refusal(reason="the offer has no lease process")
            instance_id = lease.instance_id
            self._step(dhcp.tell, instance_id, "dhcp_request",
                         {"address": address, "hostname": client.hostname},
                         actor=self.actor)
            view = self._wait(instance_id, lambda v: v.ended or (
                v.lease is not None and v.lease.state == "bound"))
            if view is not None and view.lease is not None and view.lease.state == "bound":
                return self._binding(client, view.lease)
            if view is not None and view.ended:
                return Refusal(reason=str(view.outcome.get("reason") or "refused"))
            return None

    def _fast_renew(self, client: Client, lease: LeaseView) -> Binding | Refusal:
        from app.services import dhcp

        renewed = self._change(dhcp.renew_bound, lease.lease_id, lease.client_id,
                               actor=self.actor)
        if renewed is None:
            return Refusal(reason="the lease ended meanwhile")
        return self._binding(client, renewed)

    def renew(self, client: Client, address: str, now: float) -> Binding | Refusal | None:
        from app.services import dhcp

        cid = dhcp.client_key(client.client_id)
        cidr = client.subnet.cidr
        with self.app.app_context():
            lease = self._read(dhcp.holding, cidr, cid)
            if lease is not None:
                if lease.address != address:
                    return Refusal(reason="not your address")
                if lease.state == "bound":
                    return self._fast_renew(client, lease)
                return self._request(client, address)
            holder = self._read(dhcp.holder_of, cidr, address)
            if holder is not None:
                return Refusal(reason="address held by another client")
            last = self._read(dhcp.latest, cidr, cid)
        if last is not None and last.address == address and client.subnet.in_pool(address):
            # Our client, back with the address it had and nobody holds: it gets it again.
            return self._request(client, address)
        return None  # no record: silence unless authoritative (RFC 2131 §4.3.2)

    def release(self, client: Client, address: str, now: float) -> None:
        self._end(client, address, bound="lease_release", offered=None, reason="release")

    def decline(self, client: Client, address: str, now: float) -> None:
        self._end(client, address, bound="dhcp_decline", offered="dhcp_forget",
                  reason="decline")

    def forget_offer(self, client: Client, now: float) -> None:
        self._end(client, None, bound=None, offered="dhcp_forget", reason="abandon")

    def _end(self, client: Client, address: str | None, *, bound: str | None,
             offered: str | None, reason: str) -> None:
        """Tell the client's instance its lease ends; only for the holder's own address."""
        from app.services import dhcp

        cid = dhcp.client_key(client.client_id)
        with self.app.app_context():
            lease = self._read(dhcp.holding, client.subnet.cidr, cid)
            if lease is None or (address is not None and lease.address != address):
                return  # not this client's: ignored, or one client could empty the pool
            message = bound if lease.state == "bound" else offered
            if message is None:
                return
            live = lease.instance_id is not None and self._read(dhcp.is_live,
                                                                lease.instance_id)
            if live and self._change(dhcp.tell, lease.instance_id, message,
                                     {"reason": reason, "by": self.actor},
                                     actor=self.actor):
                return
            if not live:  # an instance that ended oddly must not pin the address
                self._change(dhcp.give_back, lease.lease_id, reason=reason, actor=self.actor)

    def lookup(self, client: Client, now: float) -> Binding | None:
        from app.services import dhcp

        with self.app.app_context():
            lease = self._read(dhcp.latest, client.subnet.cidr,
                               dhcp.client_key(client.client_id))
        if lease is None:
            return None
        state = lease.state
        if state in ("offered", "bound") and lease.seconds_left() <= 0:
            state = "expired"
        return Binding(address=lease.address, client_id=client.client_id,
                       lease_time=lease.seconds_left(), state=_STATES.get(state, "released"),
                       hostname=lease.hostname)


if TYPE_CHECKING:  # mypy proves the process backend satisfies the port
    def _check(app: Flask) -> LeaseBackend:
        return ProcessLeaseBackend(app)


# -- running the server in a Leaseflow process (`leaseflow dhcp`, `leaseflow up`) -----------

_running: list[DhcpServer] = []
_running_lock = threading.Lock()


def server_config(app: Flask, *, interface: str, server_id: str | None = None,
                  workers: int = 16, authoritative: bool = False,
                  offer_lifetime: float = 30.0,
                  max_new_exchanges: int | None = None) -> ServerConfig:
    """The server's configuration from the database's subnets.

    Subnets holding the interface's address are attached to it; the others are served to
    relays (selected by giaddr). The server identifier is the interface's address.
    """
    import ipaddress

    from app.dhcp.server import interface_address
    from app.services import dhcp

    with app.app_context():
        try:
            served = dhcp.served_subnets()
        finally:
            from app.extensions import db

            db.session.rollback()
    server_id = server_id or interface_address(interface)
    own = ipaddress.IPv4Address(server_id)
    configs = tuple(SubnetConfig(
        cidr=s.cidr, pool=s.pool, gateway=s.gateway, dns=s.dns, lease_time=s.lease_time,
        interface=interface if own in ipaddress.IPv4Network(s.cidr) else None)
        for s in served)
    return ServerConfig(server_id=server_id, subnets=configs, authoritative=authoritative,
                        offer_lifetime=offer_lifetime, workers=workers,
                        max_new_exchanges=max_new_exchanges)


DORA_PATHS = ("process", "fast")
FAST_NEW_EXCHANGES = 1024  # DISCOVERs in flight on the fast path (one group's worth or more)


def start_server(app: Flask, *, interface: str, port: int = 67, workers: int | None = None,
                 patience: float = DEFAULT_PATIENCE, server_id: str | None = None,
                 sock: socket.socket | None = None, dora: str | None = None,
                 shard: Shard | None = None) -> DhcpServer:
    """Start a DHCP server on `interface` driven by the lease process; `stop_server` ends it.

    `dora` (default `LEASEFLOW_DHCP_DORA`): "process", each new client's exchange waits for
    its instance; "fast", exchanges are group-committed and the instance follows
    (`app.dhcp.fast_backend`). Backend calls that wait run on `workers` threads (default
    16); on the fast path DISCOVERs and REQUESTs wait on no thread (they are answered from
    the group's), so up to FAST_NEW_EXCHANGES new exchanges may be in flight at once.
    `shard`: this server is one of several processes on `sock`'s port
    (`app.dhcp.processes`); on the fast path it offers from its own stripe of each pool.
    """
    dora = dora or app.config["LEASEFLOW"].dhcp_dora
    if dora not in DORA_PATHS:
        raise ConfigError(f"unknown DORA path {dora!r} (LEASEFLOW_DHCP_DORA): "
                          f"choose {' or '.join(DORA_PATHS)}")
    config = server_config(app, interface=interface, server_id=server_id,
                           workers=max(1, 16 if workers is None else workers),
                           max_new_exchanges=FAST_NEW_EXCHANGES if dora == "fast" else None)
    backend: ProcessLeaseBackend
    counters = Counters()  # the server's, which the fast path's reuse counts in too
    if dora == "fast":
        from app.dhcp import reuse
        from app.dhcp.fast_backend import FastLeaseBackend

        threshold = app.config["LEASEFLOW"].dhcp_reuse
        try:
            reuse.check_threshold(threshold)
        except ValueError as exc:
            raise ConfigError(f"{exc} (LEASEFLOW_DHCP_REUSE)") from None
        backend = FastLeaseBackend(
            app, patience=patience, offer_lifetime=config.offer_lifetime,
            stripe=shard, reuse=threshold, counters=counters)
    else:
        backend = ProcessLeaseBackend(app, patience=patience,
                                      offer_lifetime=config.offer_lifetime)
    server = DhcpServer(interface=interface, config=config, backend=backend, port=port,
                        sock=sock, shard=shard, counters=counters)
    try:
        server.start()
    except BaseException:
        backend.close()
        raise
    with _running_lock:
        _running.append(server)
    return server


def stop_server(server: DhcpServer) -> None:
    with _running_lock:
        if server in _running:
            _running.remove(server)
    server.stop()
    if isinstance(server.backend, ProcessLeaseBackend):
        server.backend.close()


def running_counters() -> dict[str, dict[str, int]]:
    """interface → counters of each server running in this process (for /metrics)."""
    with _running_lock:
        servers = list(_running)
    out: dict[str, dict[str, int]] = {}
    for server in servers:
        merged = out.setdefault(server.interface, {})
        for name, value in server.counters.snapshot().items():
            merged[name] = merged.get(name, 0) + value
    return out
