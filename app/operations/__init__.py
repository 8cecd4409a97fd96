"""The catalogue of service-task operations (`GET /api/v1/operations`, the modeler's palette).

An operation is a name, a parameter schema and a handler that calls one service. Handlers run
inside the worker's transaction and never commit. They signal failure with `BusinessError`
(the BPMN error path at once: address taken, pool exhausted) or `TransientError` (retried
with backoff by the job runner: a peer down, a timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

# A handler answers a result object, or a Future of one when its work is batched with other
# jobs' (the runner starts every job of a batch first, then waits for the futures).
Handler = Callable[[Mapping[str, Any]], "dict[str, Any] | Future[dict[str, Any]]"]
# A batch handler does the work of many jobs of one operation at once (one statement for a
# batch of reservations), answering each job's result or error in its place.
BatchHandler = Callable[[Sequence[Mapping[str, Any]]], "list[dict[str, Any] | OperationError]"]
PARAM_TYPES = ("str", "int", "float", "bool", "dict", "list", "any")


class OperationError(Exception):
    kind = "transient"

    def __init__(self, message: str, *, code: str = "operation_failed",
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = dict(details or {})


class BusinessError(OperationError):
    kind = "business"


class TransientError(OperationError):
    kind = "transient"


@dataclass(frozen=True, kw_only=True)
class Operation:
    name: str
    description: str
    params: Mapping[str, str]  # name -> one of PARAM_TYPES
    required: frozenset[str]
    handler: Handler
    queue: str = "default"  # worker queue; "default" jobs may run ahead in the same worker
    # False only for handlers whose writes are safe to keep when they fail half-way (their
    # retry is idempotent): the runner then spares the two SAVEPOINT statements per job.
    savepoint: bool = True
    errors: tuple[str, ...] = field(default=())  # business error codes it may raise
    batch: BatchHandler | None = None  # only for savepoint=False operations

    def __post_init__(self) -> None:
        for name, kind in self.params.items():
            if kind not in PARAM_TYPES:
                raise ValueError(f"{self.name}: parameter {name} has unknown type {kind}")
        if not self.required <= set(self.params):
            raise ValueError(f"{self.name}: required parameters must be declared")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "queue": self.queue,
            "errors": list(self.errors),
            "parameters": {
                "type": "object",
                "properties": {n: {"type": t} for n, t in self.params.items()},
                "required": sorted(self.required),
            },
        }


REGISTRY: dict[str, Operation] = {}


def register(name: str, *, description: str, params: Mapping[str, str],
             required: set[str] | frozenset[str] = frozenset(), queue: str = "default",
             errors: tuple[str, ...] = (), savepoint: bool = True
             ) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        REGISTRY[name] = Operation(name=name, description=description, params=dict(params),
                                   required=frozenset(required), handler=handler, queue=queue,
                                   errors=errors, savepoint=savepoint)
        return handler
    return wrap


def register_batch(name: str) -> Callable[[BatchHandler], BatchHandler]:
    """Give a registered operation a batch handler; the runner uses it for several jobs."""
    def wrap(handler: BatchHandler) -> BatchHandler:
        operation = REGISTRY[name]
        if operation.savepoint:
            raise ValueError(f"{name}: a batch cannot run each job in its own savepoint")
        REGISTRY[name] = replace(operation, batch=handler)
        return handler
    return wrap


def get(name: str) -> Operation:
    load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise BusinessError(f"unknown operation {name!r}", code="unknown_operation") from None


def catalogue() -> list[dict[str, Any]]:
    load_all()
    return [REGISTRY[name].describe() for name in sorted(REGISTRY)]


def load_all() -> None:
    """Import the modules that register operations (once)."""
    from . import chain_ops, dhcp_ops, ipam_ops, ledger_ops  # noqa: F401
