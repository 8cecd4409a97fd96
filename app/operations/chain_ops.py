"""`chain.validate`, `chain.record`, `chain.release`: the lease registry contract in a process.

Each handler reads the lease, builds its one chain item and hands it to the process-wide
batcher, answering with a Future: the job runner starts every job of its batch before it
waits, so many instances' items travel in one transaction (or one `eth_call` for
validations). What the chain says becomes the job's outcome:

- refused because another holder has the address → BusinessError `address_taken_on_chain`
  with the address in `details`, so the diagram gives the reservation back and asks for
  another address;
- node down or slow → TransientError (the task's retry policy, then the manual-retry inbox);
- the transaction reverted → BusinessError `chain_reverted`;
- a deployment problem (no contract at the stored address, wrong chain id, sender without the
  writer role) → TransientError `chain_misconfigured`: retrying cannot help until an operator
  acts, and the inbox is where an operator looks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from ..chain import (
    ArtifactError,
    ChainError,
    ContractNotFound,
    Outcome,
    Reason,
    TransactionReverted,
    Unauthorized,
    WrongChain,
)
from ..errors import NotFound
from ..ipam.addresses import int_to_ip
from ..models import Lease
from ..services import chain, leases
from . import BusinessError, OperationError, TransientError, register
from .ipam_ops import _params

_MISCONFIGURED = (ContractNotFound, WrongChain, Unauthorized, ArtifactError)


def operation_error(exc: BaseException, what: str) -> OperationError:
    """The job outcome of a chain failure (see the module docstring)."""
    if isinstance(exc, OperationError):
        return exc
    if isinstance(exc, _MISCONFIGURED):
        return TransientError(f"{what}: {exc}", code="chain_misconfigured")
    if isinstance(exc, ChainError) and exc.transient:
        return TransientError(f"{what}: {exc}", code="chain_unavailable")
    if isinstance(exc, TransactionReverted):
        return BusinessError(f"{what}: {exc}", code="chain_reverted",
                             details={"tx_hash": exc.tx_hash} if exc.tx_hash else None)
    if isinstance(exc, ChainError):
        # e.g. a closed batcher (process shutting down) or a node refusing the transaction
        return TransientError(f"{what}: {exc}", code="chain_error")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}", code="chain_error")


def then(future: Future[Outcome], answer: Callable[[Outcome], dict[str, Any]],
         what: str) -> Future[dict[str, Any]]:
    """A Future of the job's result, settled from the chain item's Future.

    Waiting on it sends what the chain service holds (see `FlushingFuture`).
    """
    result: Future[dict[str, Any]] = chain.FlushingFuture(
        getattr(future, "flush", lambda: None))

    def settle(done: Future[Outcome]) -> None:
        try:
            result.set_result(answer(done.result()))
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the job
            result.set_exception(operation_error(exc, what))

    future.add_done_callback(settle)
    return result


def _lease(params: Mapping[str, Any]) -> Lease:
    lease_id = _params(params, "lease_id", int)
    try:
        return leases.get_lease(lease_id)
    except NotFound:
        raise BusinessError(f"no lease {lease_id}", code="unknown_lease") from None


def _facts(lease: Lease) -> dict[str, Any]:
    return {"subnet": lease.subnet.cidr, "ip": int_to_ip(lease.address),
            "client_id": lease.client_id, "lease_id": lease.id}


def _service(what: str) -> chain.ChainService:
    try:
        return chain.get()
    except Exception as exc:
        raise operation_error(exc, what) from None


def _refused(outcome: Outcome, ip: str, what: str) -> BusinessError:
    if outcome.reason is Reason.TAKEN:
        return BusinessError(f"{ip} is held by another holder on chain",
                             code="address_taken_on_chain", details={"ip": ip})
    return BusinessError(f"{what}: the contract refused {ip} ({outcome.reason.name.lower()})",
                         code=f"chain_{outcome.reason.name.lower()}", details={"ip": ip})


def _allocation(params: Mapping[str, Any], doing: str) -> tuple[dict[str, Any], Any, Any, str]:
    """The lease's registry item (with its on-chain expiry), the service, and a label."""
    lease = _lease(params)
    facts = _facts(lease)
    what = f"{doing} {facts['ip']} on chain"
    service = _service(what)
    try:
        expires = chain.chain_expiry(service, lease.expires_at)
    except Exception as exc:
        raise operation_error(exc, what) from None
    return facts, service, chain.allocate_item(**facts, expires=expires), what


@register("chain.validate",
          description="Ask the lease registry contract whether it would accept this lease "
                      "(a read, no transaction)",
          params={"lease_id": "int"}, required={"lease_id"},
          errors=("address_taken_on_chain", "chain_reverted", "unknown_lease"))
def validate(params: Mapping[str, Any]) -> Future[dict[str, Any]]:
    facts, service, item, what = _allocation(params, "validating")

    def answer(outcome: Outcome) -> dict[str, Any]:
        if not outcome.accepted:
            raise _refused(outcome, facts["ip"], what)
        return {"accepted": True, "ip": facts["ip"], "holder": "0x" + item.holder.hex()}

    try:
        return then(service.validate(item), answer, what)
    except Exception as exc:
        raise operation_error(exc, what) from None


@register("chain.record",
          description="Record the committed lease in the lease registry contract (batched)",
          params={"lease_id": "int"}, required={"lease_id"},
          errors=("address_taken_on_chain", "chain_reverted", "unknown_lease"))
def record(params: Mapping[str, Any]) -> Future[dict[str, Any]]:
    facts, service, item, what = _allocation(params, "recording")

    def answer(outcome: Outcome) -> dict[str, Any]:
        if not outcome.accepted:
            raise _refused(outcome, facts["ip"], what)
        return {"recorded": True, "ip": facts["ip"], "holder": "0x" + item.holder.hex(),
                "expires": item.expires, "tx_hash": outcome.tx_hash,
                "block_number": outcome.block_number}

    try:
        return then(service.submit(item), answer, what)
    except Exception as exc:
        raise operation_error(exc, what) from None


@register("chain.release",
          description="Free the lease's address in the lease registry contract (batched); "
                      "an address the chain no longer gives this lease counts as released",
          params={"lease_id": "int"}, required={"lease_id"},
          errors=("chain_reverted", "unknown_lease"))
def release(params: Mapping[str, Any]) -> Future[dict[str, Any]]:
    lease = _lease(params)
    facts = _facts(lease)
    what = f"releasing {facts['ip']} on chain"
    service = _service(what)
    item = chain.release_item(**facts)

    def answer(outcome: Outcome) -> dict[str, Any]:
        # NOT_ALLOCATED: never recorded or already freed (a retried job). NOT_HOLDER: the
        # on-chain lease lapsed and another holder took the address. Either way this lease
        # holds nothing on chain any more, which is what a release wants.
        return {"released": outcome.accepted, "reason": outcome.reason.name.lower(),
                "ip": facts["ip"], "tx_hash": outcome.tx_hash}

    try:
        return then(service.submit(item), answer, what)
    except Exception as exc:
        raise operation_error(exc, what) from None
