"""Errors of the chain area, split into transient (retry later) and business (do not retry).

Callers (the Celery operations, the retry policy of the BPMN engine) decide with one
attribute, `transient`, instead of knowing every web3/eth-tester exception type.
"""

from __future__ import annotations


class ChainError(Exception):
    """Base of every chain error. `transient` says whether retrying the same call may work."""

    transient: bool = False


class ChainUnavailable(ChainError):
    """The node cannot be reached or did not answer in time."""

    transient = True


class ChainTimeout(ChainUnavailable):
    """A transaction was sent but its receipt or confirmations did not come in time."""


class TransactionReverted(ChainError):
    """The contract refused the whole call (e.g. the sender is not a writer)."""

    def __init__(self, message: str, *, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class Unauthorized(TransactionReverted):
    """The sender lacks the writer or admin role."""


class OutOfGas(TransactionReverted):
    """The transaction ran out of gas; a smaller batch or a higher gas limit is needed."""


class ContractNotFound(ChainError):
    """No LeaseRegistry at the configured address (wrong address, or a fresh chain)."""


class WrongChain(ChainError):
    """The node serves another chain id than the one configured."""


class ArtifactError(ChainError):
    """The compiled artifact is missing, unreadable, or out of date with its source."""
