"""`ledger.append`: a process-level entry in the tamper-evident audit log.

Lease changes are recorded by the lease service itself; this operation lets a diagram add
its own facts (an approval, a note) to the same hash chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..services import uow
from . import register
from .ipam_ops import _params


@register("ledger.append", description="Append an entry to the audit ledger",
          params={"kind": "str", "subject": "str", "data": "dict"}, required={"kind"})
def append(params: Mapping[str, Any]) -> dict[str, Any]:
    kind = _params(params, "kind", str)
    uow.record(kind=f"process.{kind}", subject=_params(params, "subject", str, required=False)
               or "", actor="process", payload=_params(params, "data", dict, required=False)
               or {})
    return {"appended": True}
