"""The DHCPv4 server's socket adapter: receive, hand to the RFC logic, send the reply.

One UDP socket on 0.0.0.0:PORT bound to one interface (`SO_BINDTODEVICE`: without it a
broadcast reply fails with ENETUNREACH, and we would answer on interfaces we do not serve).
Relays reach it on the same port (giaddr set) and get replies on port 67. To serve several
interfaces, run one `DhcpServer` per interface with the same backend and config (the sockets
share port 67 thanks to `SO_REUSEADDR` and the per-device binding). To use more than one
core on one interface, `open_group` opens a socket per process on one port and the kernel
steers each client to one of them (`app.dhcp.steering`, `app.dhcp.processes`).

Threads: one receive loop decodes and plans every datagram (cheap, pure); backend calls,
which may block up to the lease process's patience, run on a small `ThreadPoolExecutor`
(`ServerConfig.workers`), so one slow client never stalls the loop. `workers=0` runs backend
calls inline (only for backends that never block, such as `MemoryLeaseBackend`, where the
thread hand-off costs more than the call).

Admission control keeps an overloaded server completing about its capacity (instead of
collapsing under a queue of work nobody waits for any more). Silence is the right overload
answer: per RFC 2131 a client that gets none retransmits. In order:

- a DISCOVER (a new exchange, `handler.opens_exchange`) while `ServerConfig.max_new_exchanges`
  DISCOVERs already wait for or run on a worker is dropped at once (`dropped_overload_new`):
  REQUESTs of exchanges already half done (and renewals, RELEASEs...) never queue behind an
  unbounded crowd of newcomers, so the offers we make turn into leases;
- any call beyond `ServerConfig.max_pending` waiting is dropped (`dropped_overload`);
- a call that waited for a worker longer than `ServerConfig.stale_after` is dropped without
  calling the backend (`dropped_stale`, `handler.is_stale`): its client already gave up on
  that copy, and answering it would only delay the fresh ones.

Run it from a shell (with the in-memory backend, for tests and benchmarks):

    python -m app.dhcp.server --interface IF [--port 67] --subnet CIDR --pool FIRST-LAST \
        [--subnet CIDR --pool FIRST-LAST ...] [--gateway IP] [--dns IP,IP] \
        [--lease-time S] [--server-id IP] [--authoritative] [--offer-lifetime S] \
        [--workers N] [--max-new-exchanges N] [--stale-after S] [--stats-file FILE] \
        [--log-level LEVEL]

Every `--subnet` (with its `--pool`, in order) is attached to IF and is also selected for
relayed traffic whose giaddr lies in it (perfdhcp relays from its own address). The server
id defaults to IF's IPv4 address. It prints `listening on IF:PORT` once the socket is bound,
stops on SIGTERM/SIGINT, and prints its counters as one JSON line on exit (also written to
`--stats-file`, with the bindings).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.dhcp.backend import LATER, LeaseBackend
from app.dhcp.codec import encode
from app.dhcp.config import ServerConfig, SubnetConfig
from app.dhcp.errors import ConfigError, DhcpError
from app.dhcp.handler import Counters, count, is_stale, opens_exchange, prepare, resolve
from app.dhcp.pacer import Pacer
from app.dhcp.rfc2131 import Ask, Reply, answer
from app.dhcp.steering import Shard, encode_program, program
from app.pending import Pending

log = logging.getLogger(__name__)

RECV_SIZE = 4096  # larger than MAX_PACKET_SIZE, so an oversized datagram is seen (and dropped)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_SO_RCVBUFFORCE = 33
_SO_ATTACH_REUSEPORT_CBPF = 51
_CMSG_SIZE = socket.CMSG_SPACE(12)  # struct in_pktinfo
_LIMITED_BROADCAST = b"\xff\xff\xff\xff"
GROUPED_CALLS = frozenset({"offer", "commit", "renew"})  # a GroupedLeaseBackend may take


def open_socket(interface: str, port: int = 67, *, reuseport: bool = False) -> socket.socket:
    """A UDP socket on 0.0.0.0:port that only sees (and sends on) `interface`.

    `reuseport`: one of a group of sockets on that port (`open_group`).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
        # The destination address tells RENEWING (unicast) from REBINDING (broadcast).
        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        # Bursts (perfdhcp, a rack booting) must wait in the kernel, not be lost there.
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                break
            except OSError:
                continue
        sock.bind(("0.0.0.0", port))  # noqa: S104 - a DHCP server must hear broadcasts
    except BaseException:
        sock.close()
        raise
    return sock


def open_group(interface: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets on one port, one per server process, the kernel steering each
    client to one of them by chaddr (`app.dhcp.steering`): socket i serves `Shard(i, count)`.

    The kernel numbers a group's sockets in the order they were bound, and renumbers it
    when one closes: the caller keeps every socket open as long as any serves.
    """
    import ctypes

    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(open_socket(interface, port, reuseport=True))
            port = socks[0].getsockname()[1]  # port 0: the rest join the first's port
        steering = program(count)
        code = ctypes.create_string_buffer(encode_program(steering))
        fprog = struct.pack("HL", len(steering), ctypes.addressof(code))  # struct sock_fprog
        socks[0].setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def interface_address(interface: str) -> str:
    """The IPv4 address of `interface` (SIOCGIFADDR), the natural server identifier."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
        except OSError as exc:
            raise ConfigError(f"interface {interface} has no IPv4 address: {exc}") from exc
    return socket.inet_ntoa(answer[20:24])


class Slots:
    """At most `limit` held at once: `take` says False when none is free (it never waits),
    `give` hands one back. The server takes one per ask it accepts and gives it back from
    the thread that replied: a lock and a count. A `threading.BoundedSemaphore` (a
    Condition written in Python) took 1.9 us for a take and a give, this 0.7 (timeit)."""

    __slots__ = ("_free", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._free = self._limit = limit

    def take(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._lock:
            if self._free >= self._limit:
                raise ValueError("a slot given back that was not taken")
            self._free += 1

    @property
    def free(self) -> int:
        return self._free


class DhcpServer:
    """`start()` opens the socket (unless one is given) and runs; `stop()` ends cleanly.

    `executor` (tests) replaces the worker pool `start()` would create; `clock` is the
    monotonic clock that dates queued calls for the staleness check. `shard`: this server
    is one of several processes on the port (`open_group`); it ignores the copies of
    broadcasts that are another's (`ignored_other_process`).
    """

    def __init__(
        self,
        *,
        interface: str,
        config: ServerConfig,
        backend: LeaseBackend,
        port: int = 67,
        sock: socket.socket | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        shard: Shard | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.interface = interface
        self.shard = shard
        self.config = config
        self.backend = backend
        self.port = port
        self.counters = counters if counters is not None else Counters()
        self._sock = sock
        self._own_socket = sock is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Executor | None = executor
        self._own_pool = executor is None
        self._clock = clock
        self._slots = Slots(config.max_pending)
        self._begin: Callable[..., Pending[Any] | None] | None = getattr(backend, "begin", None)
        self._at_once: Callable[..., Any] | None = getattr(backend, "at_once", None)
        self._new_slots = Slots(config.new_exchange_budget)
        # A grouping backend's replies (`_answer_grouped`), paced (`dhcp.pacer`).
        self._pacer: Pacer[tuple[Ask, bool, Pending[Any]]] | None = None

    def start(self) -> None:
        if self._sock is None:
            self._sock = open_socket(self.interface, self.port)
        # Blocking receive (a timeout would cost a poll() per packet); stop() wakes it.
        self._sock.settimeout(None)
        if self._pool is None and self.config.workers > 0:
            self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="dhcp")
        if self._begin is not None and self.config.reply_burst > 0:
            self._pacer = Pacer(self._answer_paced, burst=self.config.reply_burst,
                                gap=self.config.reply_gap)
        self._thread = threading.Thread(target=self._loop, name="dhcp-recv", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._sock is not None:
            # Linux wakes a reader blocked on a UDP socket when it is shut down (recv then
            # returns b""), even though the call itself reports ENOTCONN for unconnected
            # sockets.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None and self._own_pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._pacer is not None:  # what is queued still goes out, before the socket closes
            self._pacer.close(timeout)
        if self._own_socket and self._sock is not None:
            self._sock.close()

    def __enter__(self) -> DhcpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the receive loop ------------------------------------------------------------------

    def _loop(self) -> None:
        sock = self._sock
        assert sock is not None
        stop = self._stop
        shard = self.shard
        while not stop.is_set():
            try:
                data, ancdata, _flags, _peer = sock.recvmsg(RECV_SIZE, _CMSG_SIZE)
            except OSError as exc:
                if stop.is_set():
                    return
                self.counters.add("receive_errors")
                log.warning("receive failed: %s", exc)
                continue
            if stop.is_set():
                return
            if shard is not None and not shard.owns(data):
                self.counters.add("ignored_other_process")
                continue
            try:
                self._dispatch(data, ancdata)
            except Exception:  # nothing a packet does may end the loop
                self.counters.add("dropped_internal_error")
                log.exception("unexpected error handling a packet")

    def _dispatch(self, data: bytes, ancdata: list[tuple[int, int, bytes]]) -> None:
        to_broadcast: bool | None = None
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                to_broadcast = value[8:12] == _LIMITED_BROADCAST
        planned = prepare(data, interface=self.interface, to_broadcast=to_broadcast,
                          config=self.config, counters=self.counters)
        if isinstance(planned, Reply):
            self._send(planned)
        elif isinstance(planned, Ask):
            if self._begin is not None and self._grouped(planned, self._begin):
                return
            if self._pool is None:
                self._resolve(planned)
            else:
                self._admit(planned, self._pool)

    def _grouped(self, ask: Ask, begin: Callable[..., Pending[Any] | None]) -> bool:
        """Hand `ask` to a grouping backend (see `GroupedLeaseBackend`), under the same
        admission budgets as a worker; False if the backend does not take this call."""
        if ask.call not in GROUPED_CALLS:
            return False
        if self._at_once is not None:  # answered from memory: no slot, no thread
            known = self._at_once(ask.call, ask.inbound.client, ask.inbound.address,
                                  time.time())
            if known is not LATER:
                self._reply(ask, known)
                return True
        new = opens_exchange(ask)
        if not self._take(new):
            return True
        try:
            future = begin(ask.call, ask.inbound.client, ask.inbound.address, time.time())
        except BaseException:
            self._release(new)
            raise
        if future is None:
            self._release(new)
            return False
        pacer = self._pacer
        if pacer is None:
            future.add_done_callback(lambda done: self._answer_grouped(ask, new, done))
        else:
            future.add_done_callback(lambda done: pacer.put((ask, new, done)))
        return True

    def _answer_paced(self, item: tuple[Ask, bool, Pending[Any]]) -> None:
        self._answer_grouped(*item)

    def _answer_grouped(self, ask: Ask, new: bool, done: Pending[Any]) -> None:
        """Once the group committed (on the pacer's thread, or the backend's): the reply, or
        a counted drop."""
        try:
            try:
                result = done.result()
            except Exception:
                log.exception("lease backend failed on %s", ask.call)
                self.counters.add("backend_errors")
                return
            self._reply(ask, result)
        finally:
            self._release(new)

    def _reply(self, ask: Ask, result: Any) -> None:
        """Send the backend's `result` for `ask` (OFFER, ACK, NAK) or count the silence."""
        try:
            outcome = answer(ask, result, self.config)
            count(outcome, self.counters)
            if isinstance(outcome, Reply):
                self._send(outcome)
        except Exception:
            self.counters.add("dropped_internal_error")
            log.exception("unexpected error answering a grouped request")

    def _admit(self, ask: Ask, pool: Executor) -> None:
        """Queue `ask` for a worker, or drop it (counted) if the server has no room."""
        new = opens_exchange(ask)
        if not self._take(new):
            return
        try:
            pool.submit(self._finish, ask, new, self._clock())
        except BaseException:  # e.g. the pool shut down by stop(): give the slots back
            self._release(new)
            raise

    def _take(self, new: bool) -> bool:
        """A slot for an ask (and a new exchange's slot for a DISCOVER), or a counted drop."""
        if new and not self._new_slots.take():
            self.counters.add("dropped_overload_new")
            return False
        if not self._slots.take():
            if new:
                self._new_slots.give()
            self.counters.add("dropped_overload")
            return False
        return True

    def _release(self, new: bool) -> None:
        self._slots.give()
        if new:
            self._new_slots.give()

    def _finish(self, ask: Ask, new: bool, queued_at: float) -> None:
        """On a worker: drop the ask if it went stale while queued, else resolve it."""
        try:
            if is_stale(queued_at, self._clock(), self.config):
                self.counters.add("dropped_stale")
                return
            self._resolve(ask)
        finally:
            self._release(new)

    def _resolve(self, ask: Ask) -> None:
        try:
            outcome = resolve(ask, self.backend, self.config, time.time(), self.counters)
            if isinstance(outcome, Reply):
                self._send(outcome)
        except Exception:
            self.counters.add("dropped_internal_error")
            log.exception("unexpected error finishing a request")

    def _send(self, reply: Reply) -> None:
        sock = self._sock
        assert sock is not None
        try:
            sock.sendto(encode(reply.packet, options_wire=reply.options_wire),
                        (reply.address, reply.port))
        except (OSError, DhcpError) as exc:
            self.counters.add("send_errors")
            log.debug("sending to %s:%s failed: %s", reply.address, reply.port, exc)
        else:
            self.counters.add("sent")


# Young objects are collected after this many allocations (Python's default: 700). A group
# of bindings allocates tens of thousands of short-lived containers, and the default ran a
# collection every few hundred of them: `bench dhcp_groups` used 83 / 82 us of CPU per DORA
# at a group of 256 with it, 73 / 75 with this (102 / 102 and 94 / 99 at 64).
GC_THRESHOLD = (100_000, 50, 1000)


def tune_collector() -> None:
    """For a long-running server, once started: what start-up loaded (modules, the process
    spec, the engine snapshot) is frozen out of the collector's way, so a full collection
    walks only what the exchanges allocate, and young objects are collected less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def serve(interface: str, port: int, backend: LeaseBackend, config: ServerConfig,
          stop_event: threading.Event) -> Counters:
    """Run until `stop_event` is set; return the counters."""
    server = DhcpServer(interface=interface, config=config, backend=backend, port=port)
    server.start()
    try:
        stop_event.wait()
    finally:
        server.stop()
    return server.counters


# -- python -m app.dhcp.server --------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.dhcp.server",
        description="Leaseflow's DHCPv4 server with the in-memory lease backend.",
    )
    parser.add_argument("--interface", required=True)
    parser.add_argument("--port", type=int, default=67)
    parser.add_argument("--subnet", action="append", required=True, help="CIDR (repeatable)")
    parser.add_argument("--pool", action="append", required=True,
                        help="FIRST-LAST, one per --subnet, in order")
    parser.add_argument("--gateway", action="append", default=[],
                        help="router option, one per --subnet (optional)")
    parser.add_argument("--dns", default="", help="comma-separated DNS servers")
    parser.add_argument("--lease-time", type=int, default=3600)
    parser.add_argument("--server-id", default=None)
    parser.add_argument("--authoritative", action="store_true")
    parser.add_argument("--offer-lifetime", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="backend threads (0: inline, fine for the memory backend)")
    parser.add_argument("--max-new-exchanges", type=int, default=None,
                        help="DISCOVERs queued or running at once (default: workers/2, >= 2)")
    parser.add_argument("--stale-after", type=float, default=1.0,
                        help="seconds a queued call may wait before it is dropped unrun")
    parser.add_argument("--stats-file", type=Path, default=None)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> ServerConfig:
    if len(args.pool) != len(args.subnet):
        raise ConfigError("give exactly one --pool per --subnet")
    dns = tuple(s for s in args.dns.split(",") if s)
    subnets = []
    for i, (cidr, pool) in enumerate(zip(args.subnet, args.pool, strict=True)):
        first, sep, last = pool.partition("-")
        if not sep:
            raise ConfigError(f"pool {pool!r} is not FIRST-LAST")
        gateway = args.gateway[i] if i < len(args.gateway) else None
        subnets.append(SubnetConfig(cidr=cidr, pool=(first, last), gateway=gateway, dns=dns,
                                    lease_time=args.lease_time, interface=args.interface))
    server_id = args.server_id or interface_address(args.interface)
    return ServerConfig(server_id=server_id, subnets=tuple(subnets),
                        authoritative=args.authoritative, offer_lifetime=args.offer_lifetime,
                        workers=args.workers, max_new_exchanges=args.max_new_exchanges,
                        stale_after=args.stale_after)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from app.dhcp.memory import MemoryLeaseBackend

    try:
        config = build_config(args)
        backend = MemoryLeaseBackend(offer_lifetime=config.offer_lifetime,
                                     decline_probation=config.decline_probation)
        server = DhcpServer(interface=args.interface, config=config, backend=backend,
                            port=args.port)
        server.start()
    except (DhcpError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on {args.interface}:{args.port} as {config.server_id}", flush=True)
    while not stop.wait(0.5):
        if args.stats_file is not None:
            _write_stats(args.stats_file, server, backend)
    server.stop()
    if args.stats_file is not None:
        _write_stats(args.stats_file, server, backend)
    print(json.dumps(server.counters.snapshot(), sort_keys=True), flush=True)
    return 0


def _write_stats(path: Path, server: DhcpServer, backend: object) -> None:
    bindings = getattr(backend, "bindings", None)
    stats = {
        "counters": server.counters.snapshot(),
        "bindings": bindings(time.time()) if bindings is not None else {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(stats, sort_keys=True))
    tmp.replace(path)  # readers never see half a file


if __name__ == "__main__":
    sys.exit(main())
