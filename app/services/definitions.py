"""Process definitions: versions of BPMN documents, one active per key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from ..engine import runtime
from ..errors import Invalid, NotFound
from ..extensions import db
from ..models import ProcessDefinition
from . import uow
from .fresh import Fresh

PROCESSES_DIR = Path(__file__).resolve().parents[2] / "processes"
DEFAULT_KEY = "lease_lifecycle"


def label(key: str, version: int) -> str:
    """A process version's name in the ledger: "key/vN"."""
    return f"{key}/v{version}"


def store(xml: str, *, author: str, activate: bool = True) -> ProcessDefinition:
    """A new version of the document's process (after it parsed), optionally active."""
    try:
        spec = runtime.load_spec(xml)
    except runtime.DefinitionError as exc:
        raise Invalid(str(exc), code="invalid_bpmn", details=[{"message": str(exc)}]) from None
    digest = runtime.checksum(xml)
    latest = db.session.execute(select(func.max(ProcessDefinition.version))
                                .where(ProcessDefinition.key == spec.key)).scalar_one()
    definition = ProcessDefinition(key=spec.key, version=(latest or 0) + 1, xml=xml,
                                   checksum=digest, author=author, active=False)
    db.session.add(definition)
    db.session.flush()
    uow.record(kind="process.store", subject=label(spec.key, definition.version), actor=author,
               payload={"checksum": digest})
    if activate:
        deploy(spec.key, definition.version, actor=author)
    return definition


def deploy(key: str, version: int, *, actor: str) -> ProcessDefinition:
    target = get_version(key, version)
    previous = active(key, required=False)
    for row in db.session.execute(select(ProcessDefinition).where(
            ProcessDefinition.key == key, ProcessDefinition.active.is_(True))).scalars():
        row.active = False
    target.active = True
    _current.forget()
    uow.record(kind="process.deploy", subject=label(key, version), actor=actor,
               payload={"before": previous.version if previous else None, "after": version})
    return target


def get_version(key: str, version: int) -> ProcessDefinition:
    row = db.session.execute(select(ProcessDefinition).where(
        ProcessDefinition.key == key, ProcessDefinition.version == version)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no version {version} of process {key}", code="unknown_process")
    return row


def active(key: str = DEFAULT_KEY, *, required: bool = True) -> ProcessDefinition:
    # The XML (tens of KB) is loaded only if asked for: callers mostly need the id, and
    # the specs come from a per-id cache.
    row = db.session.execute(select(ProcessDefinition).options(
        defer(ProcessDefinition.xml)).where(
        ProcessDefinition.key == key, ProcessDefinition.active.is_(True))).scalar_one_or_none()
    if row is None and required:
        raise NotFound(f"process {key} has no active version", code="unknown_process")
    return row  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Current:
    """The active version of a process as a hot path needs it (no XML, no ORM object)."""

    id: int
    key: str
    version: int


def _load_current(key: str) -> Current:
    row = active(key)
    return Current(id=row.id, key=row.key, version=row.version)


_current: Fresh[str, Current] = Fresh(_load_current)


def current(key: str = DEFAULT_KEY) -> Current:
    """`active(key)` as read at most a second ago in this process (`fresh.Fresh`): the
    DHCP fast path asks for it in every group. A deploy made here shows at once; one
    made by another process within the second."""
    return _current.get(key)


# Keyed by database too: one process may serve (or test) several databases.
_specs: dict[tuple[str, int], runtime.ProcessSpec] = {}


def spec_of(definition: ProcessDefinition) -> runtime.ProcessSpec:
    return runtime.load_spec(definition.xml, definition.key)


def spec_by_id(definition_id: int) -> runtime.ProcessSpec:
    """The spec of a stored version; versions never change, so cache by id."""
    key = (str(db.engine.url), definition_id)
    spec = _specs.get(key)
    if spec is None:
        row = db.session.get(ProcessDefinition, definition_id)
        if row is None:
            raise NotFound(f"no process version {definition_id}", code="unknown_process")
        spec = _specs[key] = spec_of(row)
    return spec


DHCP_KEY = "dhcp_lease"  # the process the DHCP server runs for each client (SPEC §6)
SHIPPED_KEYS = (DEFAULT_KEY, DHCP_KEY)


def ensure_default(*, actor: str = "system") -> ProcessDefinition:
    """Load the shipped processes on first start; return the default (the API's) process.

    Besides the default, `dhcp_lease` is what the DHCP server starts for each client; a key
    that already has an active version is left as the admins deployed it.
    """
    default: ProcessDefinition | None = None
    for key in SHIPPED_KEYS:
        current = active(key, required=False)
        if current is None:
            current = store((PROCESSES_DIR / f"{key}.bpmn").read_text(), author=actor)
        if key == DEFAULT_KEY:
            default = current
    assert default is not None
    return default


def listing() -> list[dict[str, Any]]:
    rows = db.session.execute(select(ProcessDefinition).order_by(
        ProcessDefinition.key, ProcessDefinition.version)).scalars()
    return [describe(r) for r in rows]


def describe(row: ProcessDefinition) -> dict[str, Any]:
    return {"key": row.key, "version": row.version, "checksum": row.checksum,
            "active": row.active, "author": row.author, "created_at": row.created_at.isoformat()}


def validate(xml: bytes) -> Any:
    """Check an untrusted upload: safe parse, schema, platform rules (engine.validation)."""
    from .. import operations
    from ..engine.validation import OperationSchema, validate_bpmn

    catalogue = {op["name"]: OperationSchema(
        name=op["name"], params={k: v["type"] for k, v in op["parameters"]["properties"].items()},
        required=frozenset(op["parameters"]["required"])) for op in operations.catalogue()}
    return validate_bpmn(xml, catalogue)


def upload(xml: bytes, *, author: str, activate: bool = False) -> ProcessDefinition:
    """Validate and store a new version; 422 with every problem found, nothing stored."""
    report = validate(xml)
    if not report.ok:
        raise Invalid("the process has problems; nothing was stored", code="invalid_bpmn",
                      details=[{"element": p.element_id, "code": p.code, "message": p.message}
                               for p in report.problems])
    canonical = report.canonical_xml
    text = canonical.decode() if isinstance(canonical, bytes) else str(canonical)
    return store(text, author=author, activate=activate)
