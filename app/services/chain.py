"""The process-wide link to the LeaseRegistry contract: one client, registry and batchers.

Every worker thread of a process shares one ChainClient (one nonce sequence per sender), one
ChainBatcher for allocations/releases (many instances' items, one transaction) and one for
dry-run validations (many `check` reads, one `eth_call`). They are built lazily per
(database, chain URL, sender, chain id, confirmations), so tests that use several databases in
one process each get their own contract.

The contract address is learnt once and kept in the `settings` table (key
`chain.registry_address:<chain url>`), so every process of a deployment — web, workers,
DHCP server, CLI — talks to the same contract. A stored address where no LeaseRegistry answers
on a real node is a configuration error with a clear message, never a silent redeploy (that
would forget every allocation). The embedded chain lives and dies with its process, so there
an address without code is deployed again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..chain import (
    AllocateItem,
    ChainUnavailable,
    ContractNotFound,
    Outcome,
    ReleaseItem,
    holder_id,
)
from ..chain.batcher import BatchReport, ChainBatcher
from ..chain.client import ChainClient, Registry
from ..config import Settings
from ..extensions import db
from ..models import SettingValue

log = logging.getLogger(__name__)

ADDRESS_KEY = "chain.registry_address:"
MAX_SERVICES = 4  # databases one process talks to at once (tests); the oldest is closed
EXPIRY_GRACE = 60  # seconds an on-chain lease outlives its database lease (see chain_expiry)
BATCH_DELAY = 0.005  # seconds a batch waits to fill: small next to a transaction's cost


@dataclass
class BatchStats:
    """Running totals of the allocation batcher, for metrics and benchmarks."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    largest: int = 0

    def add(self, report: BatchReport) -> None:
        self.batches += 1
        self.items += report.size
        self.largest = max(self.largest, report.size)
        if report.error:
            self.failed_batches += 1


class _DryRun:
    """The batcher's applier for validations: one `eth_call` of `allocate_batch`.

    The dry run counts conflicts inside the batch too, as the real batch would.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def apply_batch(self, releases: list[ReleaseItem], allocations: list[AllocateItem]
                    ) -> tuple[list[Outcome], list[Outcome]]:
        if releases:
            raise TypeError("validation batches carry allocations only")
        return [], self._registry.validate_batch(allocations)


class FlushingFuture(Future):  # type: ignore[type-arg]
    """A Future that hands its thread's held items to the batchers before anyone waits.

    The job runner starts every job of its batch, then waits. Holding the items until that
    first wait and submitting them all at once puts one job batch's items into one chain
    batch (one transaction) instead of spreading them over several batching windows.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        super().__init__()
        self.flush = flush

    def result(self, timeout: float | None = None) -> Any:
        self.flush()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self.flush()
        return super().exception(timeout)


class _Held(threading.local):
    def __init__(self) -> None:
        self.items: list[tuple[ChainBatcher, AllocateItem | ReleaseItem, Future[Outcome]]] = []


@dataclass
class ChainService:
    """What the chain operations and the ledger use in one process for one deployment."""

    client: ChainClient
    registry: Registry
    batcher: ChainBatcher
    validator: ChainBatcher
    stats: BatchStats
    held: _Held = field(default_factory=_Held)
    clock: tuple[int, float] = (0, float("-inf"))  # (chain timestamp, monotonic time read)

    def submit(self, item: AllocateItem | ReleaseItem) -> FlushingFuture:
        """Allocate/release through the batcher; sent at the first wait on any such future."""
        return self._hold(self.batcher, item)

    def validate(self, item: AllocateItem) -> FlushingFuture:
        """A dry run through the validation batcher; sent like `submit`."""
        return self._hold(self.validator, item)

    def _hold(self, batcher: ChainBatcher, item: AllocateItem | ReleaseItem) -> FlushingFuture:
        future = FlushingFuture(self.flush)
        self.held.items.append((batcher, item, future))
        return future

    def flush(self) -> None:
        """Submit what this thread holds; each future follows its item's chain future."""
        held, self.held.items = self.held.items, []
        for batcher, item, future in held:
            try:
                inner = batcher.submit(item)
            except BaseException as exc:  # noqa: BLE001 - a closed batcher: fail, never hang
                future.set_exception(exc)
                continue
            inner.add_done_callback(functools.partial(_follow, future))

    def chain_now(self) -> int:
        """The latest block's timestamp, read at most once a second."""
        now = time.monotonic()
        if now - self.clock[1] > 1.0:
            self.clock = (self.client.block_timestamp(), now)
        return self.clock[0] + int(now - self.clock[1])

    def close(self) -> None:
        self.validator.close()
        self.batcher.close()


def _follow(outer: Future[Outcome], inner: Future[Outcome]) -> None:
    error = inner.exception()
    if error is not None:
        outer.set_exception(error)
    else:
        outer.set_result(inner.result())


_services: OrderedDict[tuple[Any, ...], ChainService] = OrderedDict()
_lock = threading.Lock()


def _settings() -> Settings:
    return current_app.config["LEASEFLOW"]  # type: ignore[no-any-return]


def _key(settings: Settings) -> tuple[Any, ...]:
    # The pid: a forked child (a prefork worker) inherits the dict but not the batchers'
    # threads, so it must build its own.
    return (os.getpid(), current_app.config["SQLALCHEMY_DATABASE_URI"], settings.chain_url,
            settings.chain_private_key, settings.chain_id, settings.chain_confirmations)


def address_key(settings: Settings | None = None) -> str:
    return ADDRESS_KEY + (settings or _settings()).chain_url


def client_for(settings: Settings) -> ChainClient:
    """A client as configured (LEASEFLOW_CHAIN_URL / _CHAIN_PRIVATE_KEY / _CHAIN_ID / ...)."""
    # A receipt that takes longer than a job may wait is as good as lost to the job: the
    # job runner gives up at job_timeout and retries, so stop waiting by then as well.
    timeout = max(1.0, min(30.0, settings.job_timeout))
    return ChainClient.from_url(settings.chain_url,
                                private_key=settings.chain_private_key or None,
                                chain_id=settings.chain_id or None,
                                confirmations=settings.chain_confirmations, timeout=timeout)


def get() -> ChainService:
    """The chain service of this process for the current app; deploys the contract once."""
    settings = _settings()
    key = _key(settings)
    with _lock:
        service = _services.get(key)
        if service is not None:
            _services.move_to_end(key)
            return service
        client = client_for(settings)
        registry = _registry(client, settings)
        stats = BatchStats()
        in_flight = 1 if client.embedded else 2  # py-evm runs one transaction at a time
        service = ChainService(
            client=client, registry=registry, stats=stats,
            batcher=ChainBatcher(registry, max_items=registry.max_batch, max_delay=BATCH_DELAY,
                                 max_in_flight=in_flight, on_batch=stats.add),
            validator=ChainBatcher(_DryRun(registry), max_items=registry.max_batch,
                                   max_delay=BATCH_DELAY, max_in_flight=in_flight))
        _services[key] = service
        while len(_services) > MAX_SERVICES:
            _old_key, old = _services.popitem(last=False)
            old.close()
        return service


def deployed_registry() -> Registry | None:
    """The registry at the stored address without deploying anything (for read-only checks).

    None when no contract was ever deployed for this database, or when the embedded chain of
    this process does not have it (the embedded chain dies with the process that made it).
    Raises ContractNotFound when a real node has no LeaseRegistry at the stored address.
    """
    settings = _settings()
    with _lock:
        service = _services.get(_key(settings))
    if service is not None:
        return service.registry
    stored = stored_address(settings)
    if stored is None:
        return None
    client = client_for(settings)
    try:
        code = client.w3.eth.get_code(stored)  # type: ignore[arg-type]
    except Exception as exc:  # a node that is down or not a node: say so, as a ChainError
        raise ChainUnavailable(f"cannot read {settings.chain_url}: {exc}") from exc
    if len(code) == 0:
        if client.embedded:
            return None
        raise ContractNotFound(
            f"no LeaseRegistry at the stored address {stored} on {settings.chain_url}: the "
            f"node was reset or LEASEFLOW_CHAIN_URL changed; delete setting "
            f"{address_key(settings)!r} to deploy a new contract (its history is lost)")
    registry = Registry(client, stored)
    registry.check()
    return registry


def reset() -> None:
    """Close every batcher of this process (tests, shutdown)."""
    with _lock:
        services = list(_services.values())
        _services.clear()
    for service in services:
        service.close()


# --- the stored contract address -------------------------------------------------------------


def stored_address(settings: Settings | None = None) -> str | None:
    with _settings_connection() as connection:
        return connection.execute(select(SettingValue.value).where(
            SettingValue.key == address_key(settings))).scalar_one_or_none()


@contextlib.contextmanager
def _settings_connection() -> Iterator[Connection]:
    """Where the address row is read and written.

    A connection of its own, committed at once, so other processes see the address even if
    the caller's transaction rolls back — except on SQLite while the caller's transaction is
    open: SQLite has one writer and that transaction already is it (BEGIN IMMEDIATE), so a
    second connection would wait for it forever; there the row joins the caller's
    transaction (embedded deployments run in one process anyway).
    """
    if db.session.get_bind().dialect.name == "sqlite" and db.session().in_transaction():
        with db.session.begin_nested():
            yield db.session.connection()
        return
    with db.engine.begin() as connection:
        yield connection


def _registry(client: ChainClient, settings: Settings) -> Registry:
    key = address_key(settings)
    stored = stored_address(settings)
    deployed: list[str] = []
    try:
        registry = client.registry(stored, on_deploy=deployed.append)
    except ContractNotFound as exc:
        raise ContractNotFound(
            f"{exc}: the address stored in setting {key!r} holds no LeaseRegistry on "
            f"{settings.chain_url} (node reset, or LEASEFLOW_CHAIN_URL changed); delete the "
            "setting to deploy a new contract") from exc
    if not deployed:
        return registry
    winner = _claim(key, deployed[0], replace=stored is not None)
    if winner != deployed[0]:
        # Another process deployed first: use its contract, ours stays unused.
        log.info("contract %s deployed by another process; using it", winner)
        registry = client.registry(winner)
    else:
        log.info("LeaseRegistry deployed at %s on %s", winner, settings.chain_url)
    return registry


def _claim(key: str, address: str, *, replace: bool) -> str:
    """Store `address` unless another process stored one first; the address that won."""
    table = SettingValue.__table__
    with _settings_connection() as connection:
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table).values(key=key, value=address)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": address}) \
            if replace else stmt.on_conflict_do_nothing(index_elements=["key"])
        connection.execute(stmt)
        return str(connection.execute(
            select(table.c.value).where(table.c.key == key)).scalar_one())


# --- items for a lease ------------------------------------------------------------------------


def lease_holder(*, subnet: str, client_id: str, lease_id: int) -> bytes:
    """The on-chain holder id of one lease: keccak of subnet CIDR, client id and lease id.

    The lease id is part of it, so a retried job of the same lease is the same holder (the
    contract accepts it again) while any other lease — even the same client's next one — is
    another holder and is refused while this one lives.
    """
    return holder_id(f"{subnet}|{client_id}|{lease_id}")


def chain_expiry(service: ChainService, expires_at: datetime | None) -> int:
    """The on-chain expiry of a lease that ends at `expires_at` (0: until released).

    Counted on the chain's own clock (the contract compares with block.timestamp, and the
    embedded chain's clock runs a second ahead with every block), plus a grace period: the
    process releases an expired lease on chain itself, so the on-chain lapse is only the
    fallback for a release that could not reach the chain.
    """
    if expires_at is None:
        return 0
    remaining = max(0, int(expires_at.timestamp() - time.time()))
    return service.chain_now() + remaining + EXPIRY_GRACE


def allocate_item(*, subnet: str, ip: str | int, client_id: str, lease_id: int,
                  expires: int) -> AllocateItem:
    base = AllocateItem.for_lease(subnet=subnet, ip=ip, client_id=client_id, expires=expires)
    return AllocateItem(subnet=base.subnet, ip=base.ip, expires=expires,
                        holder=lease_holder(subnet=subnet, client_id=client_id,
                                            lease_id=lease_id))


def release_item(*, subnet: str, ip: str | int, client_id: str, lease_id: int) -> ReleaseItem:
    base = ReleaseItem.for_lease(subnet=subnet, ip=ip, client_id=client_id)
    return ReleaseItem(subnet=base.subnet, ip=base.ip,
                       holder=lease_holder(subnet=subnet, client_id=client_id,
                                           lease_id=lease_id))


def holders(items: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes | None]:
    """The on-chain holder of each (subnet CIDR, ip as int) — for reconciliation and tests."""
    from ..chain import subnet_id

    registry = get().registry
    out: dict[tuple[str, int], bytes | None] = {}
    for cidr, ip in items:
        holding = registry.holder_of(subnet_id(cidr), ip)
        out[(cidr, ip)] = holding.holder if holding else None
    return out
