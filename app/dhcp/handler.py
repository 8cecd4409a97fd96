"""Bytes in, reply out: runs the pure RFC 2131 decisions against a `LeaseBackend`.

The socket adapter (`app.dhcp.server`) and the tests both go through `handle()`, so what a
test sees for a crafted packet is exactly what the server would send. Every failure is
turned into a counted drop here: nothing raised by a packet or a backend reaches the caller.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from app.dhcp.backend import LeaseBackend
from app.dhcp.codec import decode
from app.dhcp.config import ServerConfig
from app.dhcp.errors import MalformedPacket
from app.dhcp.rfc2131 import Ask, Drop, Inbound, Kind, Outcome, Reply, Silence, answer, plan

log = logging.getLogger(__name__)


class Counters:
    """Thread-safe event counters (received, dropped_*, offers, acks, naks, ...).

    Each thread counts in a dict of its own, so counting takes no lock: the receive loop
    and the group threads count every packet, and a shared lock between them was a few
    percent of the server's time. Readers add the threads' dicts up, each copied whole
    (`dict.copy` holds the GIL throughout, so a key its thread adds meanwhile cannot break
    the copy).
    """

    def __init__(self) -> None:
        self._mine = threading.local()
        self._parts: list[dict[str, int]] = []
        self._lock = threading.Lock()  # a new thread's dict joining; never per count

    def add(self, *names: str) -> None:
        """Add one to each of `names`."""
        try:
            counts = self._mine.counts
        except AttributeError:
            counts = self._mine.counts = {}
            with self._lock:
                self._parts.append(counts)
        for name in names:
            counts[name] = counts.get(name, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            parts = [dict.copy(part) for part in self._parts]
        total: Counter[str] = Counter()
        for part in parts:
            total.update(part)
        return dict(total)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return sum(part.get(name, 0) for part in self._parts)


# -- admission control: which asks an overloaded server turns away (pure decisions) --------


def opens_exchange(ask: Ask) -> bool:
    """A DISCOVER: the first message of a new exchange, the first to go under overload.

    Everything else (a REQUEST for our offer, a renewal, a RELEASE...) belongs to a client
    that already holds something of ours: finishing it is what turns work done into leases.
    """
    return ask.inbound.kind is Kind.DISCOVER


def is_stale(queued_at: float, now: float, config: ServerConfig) -> bool:
    """An ask that waited for a worker since `queued_at` longer than the client waits for
    this copy of its message: running it now is wasted work (RFC 2131 §4.1: the client has
    retransmitted, or given up), so it is dropped unrun. Both times on one monotonic clock."""
    return now - queued_at > config.stale_after


def call_backend(backend: LeaseBackend, ask: Ask, now: float) -> object:
    inbound: Inbound = ask.inbound
    client = inbound.client
    call = ask.call
    if call == "offer":
        return backend.offer(client, inbound.address, now)
    if call == "commit":
        assert inbound.address is not None
        return backend.commit(client, inbound.address, now)
    if call == "renew":
        assert inbound.address is not None
        return backend.renew(client, inbound.address, now)
    if call == "release":
        assert inbound.address is not None
        backend.release(client, inbound.address, now)
        return None
    if call == "decline":
        assert inbound.address is not None
        backend.decline(client, inbound.address, now)
        return None
    if call == "forget_offer":
        backend.forget_offer(client, now)
        return None
    raise AssertionError(f"unknown backend call {call}")


def resolve(ask: Ask, backend: LeaseBackend, config: ServerConfig, now: float,
            counters: Counters) -> Outcome:
    """Run the backend call of `ask` and build the outcome; backend errors become drops."""
    try:
        result = call_backend(backend, ask, now)
    except Exception:  # a backend bug must not kill the server; the client will retry
        log.exception("lease backend failed on %s", ask.call)
        counters.add("backend_errors")
        return Drop(reason="backend_error")
    outcome = answer(ask, result, config)  # type: ignore[arg-type]
    count(outcome, counters)
    return outcome


def count(outcome: Outcome | Ask, counters: Counters) -> None:
    if isinstance(outcome, Reply):
        counters.add(outcome.counter)
    elif isinstance(outcome, Drop):
        counters.add("dropped_" + outcome.reason)
    elif isinstance(outcome, Silence):
        counters.add(outcome.reason)


def prepare(data: bytes, *, interface: str | None, to_broadcast: bool | None,
            config: ServerConfig, counters: Counters) -> Drop | Reply | Ask:
    """Decode and plan one datagram (cheap, no backend): the receive loop's part."""
    try:
        packet = decode(data)
    except MalformedPacket as exc:
        counters.add("received", "dropped_malformed")
        log.debug("malformed packet dropped: %s", exc)
        return Drop(reason="malformed")
    try:
        planned = plan(packet, interface=interface, config=config, to_broadcast=to_broadcast)
    except Exception:  # a bug in the decisions must not kill the receive loop
        log.exception("planning a reply failed")
        counters.add("received", "dropped_internal_error")
        return Drop(reason="internal_error")
    # requests_<kind>: tells a RENEWING from a REBINDING or an INIT-REBOOT in the stats.
    if isinstance(planned, Ask):
        counters.add("received", "requests_" + planned.inbound.kind.value)
    elif isinstance(planned, Reply):
        if planned.kind is not None:
            counters.add("received", "requests_" + planned.kind.value, planned.counter)
        else:
            counters.add("received", planned.counter)
    else:
        counters.add("received", "dropped_" + planned.reason)
    return planned


def handle(data: bytes, *, interface: str | None, backend: LeaseBackend, config: ServerConfig,
           now: float, counters: Counters, to_broadcast: bool | None = None) -> Outcome:
    """The whole exchange for one datagram, synchronously (tests and inline servers)."""
    planned = prepare(data, interface=interface, to_broadcast=to_broadcast, config=config,
                      counters=counters)
    if isinstance(planned, Ask):
        return resolve(planned, backend, config, now, counters)
    return planned
