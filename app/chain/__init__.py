"""The chain area: the LeaseRegistry contract, its client and the micro-batcher.

Pure chain plumbing: no Flask, SQLAlchemy or Celery here; the services and Celery
operations of the lead call into it.
"""

from __future__ import annotations

from app.chain.errors import (
    ArtifactError,
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    ContractNotFound,
    OutOfGas,
    TransactionReverted,
    Unauthorized,
    WrongChain,
)
from app.chain.types import (
    AllocateItem,
    AnchorRecord,
    Holding,
    Outcome,
    Reason,
    ReleaseItem,
    TxResult,
    holder_id,
    ip_to_uint,
    subnet_id,
)

__all__ = [
    "AllocateItem",
    "AnchorRecord",
    "ArtifactError",
    "ChainError",
    "ChainTimeout",
    "ChainUnavailable",
    "ContractNotFound",
    "Holding",
    "OutOfGas",
    "Outcome",
    "Reason",
    "ReleaseItem",
    "TransactionReverted",
    "TxResult",
    "Unauthorized",
    "WrongChain",
    "holder_id",
    "ip_to_uint",
    "subnet_id",
]
