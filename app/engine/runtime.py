"""SpiffWorkflow 3.2 behind one small interface (spiff-arena's ProcessInstanceRuntime idea).

Service tasks never run inline. `ParkedServiceTask._run_hook` evaluates the task's parameters
in the sandbox and returns None, which leaves the task STARTED; the runtime reports it as a
`ParkedJob` for the outbox, and the worker's result later completes it (or throws a BPMN
error so the diagram's boundary events decide). Workflows are serialized without their spec
(the spec is cached per definition), which keeps the stored state small and restores fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from lxml import etree
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.parser.BpmnParser import full_tag
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import (
    BpmnWorkflowConverter,
    WorkflowConverter,
)
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    DurationTimerEventDefinition,
    TimeDateEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.exceptions import SpiffWorkflowException, WorkflowException
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import ServiceTaskParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.spiff.serializer.task_spec import ServiceTaskConverter
from SpiffWorkflow.spiff.specs.defaults import ServiceTask, UserTask
from SpiffWorkflow.spiff.specs.event_definitions import (
    ErrorEventDefinition,
    MessageEventDefinition,
)
from SpiffWorkflow.util.task import TaskState

from .script_engine import SandboxScriptEngine


class EngineError(Exception):
    """Base of the engine's errors."""


class DefinitionError(EngineError):
    """A BPMN document that cannot be parsed into an executable process."""


class InstanceError(EngineError):
    """The process failed while running (e.g. an expression raised)."""


class NotWaiting(EngineError):
    """A message or result arrived for something the instance is not waiting for."""


# --- parking service tasks ---------------------------------------------------------------


class ParkedServiceTask(ServiceTask):  # type: ignore[misc]
    """A service task that hands its work to the outbox instead of running inline."""

    def _run_hook(self, my_task: Any) -> None:
        params = {name: my_task.workflow.script_engine.evaluate(my_task, spec["value"])
                  for name, spec in self.operation_params.items()}
        my_task._set_internal_data(params=params)
        return None  # leaves the task STARTED until the job's result arrives


class LeaseflowParser(SpiffBpmnParser):  # type: ignore[misc]
    OVERRIDE_PARSER_CLASSES = {
        **SpiffBpmnParser.OVERRIDE_PARSER_CLASSES,
        full_tag("serviceTask"): (ServiceTaskParser, ParkedServiceTask),
    }


class LeaseflowWorkflow(BpmnWorkflow):  # type: ignore[misc]
    """BpmnWorkflow whose state-only task queries read the task table instead of walking the
    tree. The engine loop asks "which tasks are READY/WAITING/STARTED" several times per step;
    walking ~40 tasks each time was a third of a lease's engine cost. Queries with other
    filters, or on workflows with subprocesses, take SpiffWorkflow's own iterator."""

    def get_tasks(self, first_task: Any = None, **kwargs: Any) -> list[Any]:
        if first_task is None and not self.subprocesses and kwargs.keys() == {"state"}:
            state = kwargs["state"]
            return [task for task in self.tasks.values() if task.state & state]
        return super().get_tasks(first_task, **kwargs)  # type: ignore[no-any-return]

    def update_waiting_tasks(self) -> None:
        # Called after every completed task; SpiffWorkflow walks the whole tree for WAITING
        # tasks. A task only becomes WAITING by being updated, so the ones that turn WAITING
        # during this pass were just updated: a snapshot visits the same tasks that matter.
        if self.subprocesses:
            super().update_waiting_tasks()
            return
        for task in [t for t in self.tasks.values() if t.state == TaskState.WAITING]:
            if task.state == TaskState.WAITING and task.id in self.tasks:
                task.task_spec._update(task)


class CompactWorkflowConverter(BpmnWorkflowConverter):  # type: ignore[misc]
    """Serializes a workflow without its spec; restores it with the cached spec."""

    local = threading.local()

    def __init__(self, target_class: type, registry: Any, typename: str | None = None) -> None:
        # Stored states name the class "BpmnWorkflow", as they did before the subclass.
        super().__init__(target_class, registry, typename="BpmnWorkflow")

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        # Like BpmnWorkflowConverter.to_dict, minus the spec (cached per definition).
        dct: dict[str, Any] = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct: dict[str, Any]) -> BpmnWorkflow:
        spec: ProcessSpec = self.local.spec
        workflow = self.target_class(spec.spec, spec.subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _memoized_state_names() -> None:
    """SpiffWorkflow logs every task state change with extras it builds eagerly, calling
    `TaskState.get_name`, which builds a dict of all names per call: a millisecond of a
    lease's engine time. The name of a state value never changes, so remember it."""
    names: dict[int, str] = {}
    original = TaskState.get_name.__func__

    def get_name(cls: type, state: int) -> str:
        name = names.get(state)
        if name is None:
            name = names[state] = original(cls, state)
        return name

    TaskState.get_name = classmethod(get_name)


_memoized_state_names()


def _explicit_spiff_log_levels() -> None:
    """SpiffWorkflow adds every task id of the workflow (and each task's data) to its log
    records when its logger's own level is below INFO, and a logger left NOTSET (0) counts
    as below: each workflow-level record walked the whole task tree although nothing was
    printed. An explicit WARNING prints what the root's default did; a level someone set
    stays."""
    for name in ("spiff.workflow", "spiff.task"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


_explicit_spiff_log_levels()
_config = dict(SPIFF_CONFIG)
_config[ParkedServiceTask] = ServiceTaskConverter
_config[LeaseflowWorkflow] = CompactWorkflowConverter
SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(_config))
SCRIPT_ENGINE = SandboxScriptEngine()


# --- values the runtime reports -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ParkedJob:
    task_id: str
    task_name: str
    operation: str
    params: dict[str, Any]
    retries: int | None
    backoff_base: int | None


@dataclass(frozen=True, kw_only=True)
class OpenUserTask:
    task_id: str
    task_name: str
    title: str
    form: str
    data: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class StepReport:
    """What the instance needs from the outside world after a step."""

    completed: bool
    parked: tuple[ParkedJob, ...] = ()
    user_tasks: tuple[OpenUserTask, ...] = ()
    wake_at: datetime | None = None
    messages: tuple[str, ...] = ()  # message names it is waiting for
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    key: str
    checksum: str
    spec: Any
    subprocess_specs: Mapping[str, Any]
    operations: frozenset[str]

    def has_task(self, task_id: str) -> bool:
        """Whether the process (not its subprocesses) has an element with this id."""
        return task_id in self.spec.task_specs


# --- specs --------------------------------------------------------------------------------

_spec_cache: dict[str, ProcessSpec] = {}
_spec_lock = threading.Lock()


def checksum(xml: str | bytes) -> str:
    data = xml.encode() if isinstance(xml, str) else xml
    return hashlib.sha256(data).hexdigest()


def _safe_tree(xml: str | bytes) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True)
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        return etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise DefinitionError(f"malformed XML: {exc}") from None


def load_spec(xml: str | bytes, process_key: str | None = None) -> ProcessSpec:
    """Parse (once per checksum) the executable process of a BPMN document."""
    digest = checksum(xml)
    cached = _spec_cache.get(digest)
    if cached is not None:
        return cached
    with _spec_lock:
        cached = _spec_cache.get(digest)
        if cached is not None:
            return cached
        parser = LeaseflowParser()
        try:
            parser.add_bpmn_xml(_safe_tree(xml), filename=f"{digest[:12]}.bpmn")
            keys = parser.get_process_ids()
            key = process_key or _executable_process(parser, keys)
            spec = parser.get_spec(key)
            subprocess_specs = parser.get_subprocess_specs(key)
        except SpiffWorkflowException as exc:
            raise DefinitionError(str(exc)) from None
        except (KeyError, ValueError) as exc:
            raise DefinitionError(f"cannot build the process: {exc}") from None
        operations = frozenset(ts.operation_name for ts in spec.task_specs.values()
                               if isinstance(ts, ServiceTask))
        result = ProcessSpec(key=key, checksum=digest, spec=spec,
                             subprocess_specs=subprocess_specs, operations=operations)
        _spec_cache[digest] = result
        return result


def _executable_process(parser: Any, keys: list[str]) -> str:
    executable = [k for k in keys if parser.process_parsers[k].process_executable]
    if not executable:
        raise DefinitionError("the document has no executable process")
    return executable[0]  # type: ignore[no-any-return]


# --- instances ----------------------------------------------------------------------------


def start(spec: ProcessSpec, data: Mapping[str, Any]) -> tuple[BpmnWorkflow, StepReport]:
    workflow = LeaseflowWorkflow(spec.spec, spec.subprocess_specs, script_engine=SCRIPT_ENGINE)
    workflow.get_tasks(state=TaskState.READY)[0].data.update(dict(data))
    return workflow, _step(workflow)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """A workflow run once from its start event with placeholder values, captured where it
    first waits: `stamp` makes an instance of it from real values without an engine step."""

    state: str
    messages: tuple[str, ...]
    timer_field: str | None  # the field whose (date) value is the only timer's due time
    tokens: Mapping[str, str]  # field -> its placeholder as it appears in `state` (JSON)
    # `state` cut at every placeholder: pieces[0], slots[0], pieces[1], ... (one join per
    # stamp instead of one pass over the state per field)
    pieces: tuple[str, ...] = field(init=False)
    slots: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        field_of = {token: name for name, token in self.tokens.items()}
        pattern = re.compile("|".join(re.escape(token) for token in field_of))
        object.__setattr__(self, "pieces", tuple(pattern.split(self.state)))
        object.__setattr__(self, "slots", tuple(field_of[m] for m in
                                                pattern.findall(self.state)))


_PLACEHOLDER_DATE = "2999-12-31T23:59:58.123457+00:00"


def snapshot(spec: ProcessSpec, variable: str, values: Mapping[str, Any],
             *, date_field: str | None = None) -> Snapshot | None:
    """Run `spec` from its start with `{variable: values}` where every field is replaced by
    a placeholder (`date_field` by a placeholder date), and capture the first wait.

    None when that state cannot stand for every instance: the run parked a service task or
    opened a user task (those need the real instance), completed, or waits on a timer not
    given by `date_field` (a relative timer would be due from the snapshot's moment), or a
    placeholder does not survive serialization intact.
    """
    tokens = {name: f"@@lf:{name}@@" for name in values if name != date_field}
    data = {**tokens, **({date_field: _PLACEHOLDER_DATE} if date_field else {})}
    workflow, report = start(spec, {variable: data})
    if report.completed or report.parked or report.user_tasks:
        return None
    timer_field = None
    if report.wake_at is not None:
        if date_field is None or report.wake_at != \
                TimerEventDefinition.get_datetime(_PLACEHOLDER_DATE):
            return None
        timer_field = date_field
    state = serialize(workflow)
    quoted = {name: json.dumps(token) for name, token in tokens.items()}
    if date_field:
        quoted[date_field] = json.dumps(_PLACEHOLDER_DATE)
    if any(token not in state for token in quoted.values()):
        return None
    return Snapshot(state=state, messages=report.messages, timer_field=timer_field,
                    tokens=quoted)


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps does for a str


def _json(value: Any) -> str:
    """json.dumps(value), without its per-call set-up for the common plain values."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return _json_string(value)  # type: ignore[no-any-return]
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value)


def stamp(snap: Snapshot, values: Mapping[str, Any]) -> str:
    """The snapshot's state with each placeholder replaced by the JSON of its real value."""
    dumped = {name: _json(values[name]) for name in snap.tokens}
    parts = [snap.pieces[0]]
    for name, piece in zip(snap.slots, snap.pieces[1:], strict=True):
        parts += (dumped[name], piece)
    return "".join(parts)


# --- deferred states: a snapshot stored by name, stamped when first read ------------------

DEFERRED = "@snapshot "  # no serialized workflow starts so: it is JSON, an object


@dataclass(frozen=True, slots=True)
class SnapshotKey:
    """What `snapshot` is asked for: the start variable, its fields, the timer's field."""

    variable: str
    fields: tuple[str, ...]
    date_field: str | None = None


_snapshots: dict[tuple[str, SnapshotKey], Snapshot | None] = {}
_snapshots_lock = threading.Lock()


def snapshot_of(spec: ProcessSpec, key: SnapshotKey) -> Snapshot | None:
    """`snapshot(spec, ...)` for `key`, taken once per spec and key in this process."""
    cached = (spec.checksum, key)
    with _snapshots_lock:
        if cached in _snapshots:
            return _snapshots[cached]
    snap = snapshot(spec, key.variable, dict.fromkeys(key.fields), date_field=key.date_field)
    with _snapshots_lock:
        return _snapshots.setdefault(cached, snap)


def deferred(key: SnapshotKey) -> str:
    """A state to store in place of `stamp(snapshot_of(spec, key), values)`: about 100
    bytes instead of the whole workflow (~6 kB), for instances that may never step again.
    `materialize` stamps it when it is read, from the same values.

    The stamped state is this process's snapshot: its task ids and the moment of its run
    are this process's, as for any snapshot. Nothing outside the state names them: a
    snapshot has parked no job and opened no user task (else `snapshot` gives None)."""
    return DEFERRED + json.dumps([key.variable, list(key.fields), key.date_field])


def materialize(spec: ProcessSpec, state: str, values: Mapping[str, Any]) -> str:
    """The serialized workflow a stored state stands for: itself, or a deferred one
    stamped with `values` (the instance's own, as it was stored with)."""
    if not state.startswith(DEFERRED):
        return state
    try:
        variable, fields, date_field = json.loads(state[len(DEFERRED):])
        key = SnapshotKey(str(variable), tuple(str(f) for f in fields),
                          None if date_field is None else str(date_field))
    except (ValueError, TypeError) as exc:
        raise InstanceError(f"unreadable deferred state: {exc}") from None
    snap = snapshot_of(spec, key)
    if snap is None:
        raise InstanceError(f"{spec.key}: no snapshot stands for {key}")
    try:
        return stamp(snap, values)
    except KeyError as exc:
        raise InstanceError(f"a deferred state misses its value {exc}") from None


def serialize(workflow: BpmnWorkflow) -> str:
    return str(SERIALIZER.serialize_json(workflow))


def restore(spec: ProcessSpec, state: str) -> BpmnWorkflow:
    CompactWorkflowConverter.local.spec = spec
    try:
        workflow = SERIALIZER.deserialize_json(state)
    finally:
        CompactWorkflowConverter.local.spec = None
    workflow.script_engine = SCRIPT_ENGINE
    return workflow


def _started_service_task(workflow: BpmnWorkflow, task_id: str) -> Any:
    try:
        task = workflow.get_task_from_id(UUID(task_id))
    except (ValueError, WorkflowException, KeyError):
        raise NotWaiting(f"no task {task_id}") from None
    if task is None or task.state != TaskState.STARTED or \
            not isinstance(task.task_spec, ParkedServiceTask):
        raise NotWaiting(f"task {task_id} is not waiting for a result")
    return task


def complete_service_task(workflow: BpmnWorkflow, task_id: str,
                          result: Mapping[str, Any]) -> StepReport:
    """Apply a worker's result; NotWaiting if the task is no longer STARTED (late/duplicate)."""
    task = _started_service_task(workflow, task_id)
    task.data[task.task_spec.result_variable] = dict(result)
    task.complete()
    return _step(workflow)


def fail_service_task(workflow: BpmnWorkflow, task_id: str, *, code: str,
                      message: str, details: Mapping[str, Any] | None = None) -> StepReport:
    """Deliver a worker failure as a BPMN error event at the task.

    A boundary error event (matching `code`, or catch-all) takes the flow; the failure is also
    kept in the data as `last_error` so a manual-retry form can show it. With no boundary
    event to catch it the instance fails (InstanceError).
    """
    task = _started_service_task(workflow, task_id)
    error = {"code": code, "message": message, "task": task.task_spec.bpmn_id,
             "operation": task.task_spec.operation_name, **dict(details or {})}
    task.data["last_error"] = error
    boundary = [child for child in task.parent.children
                if child.task_spec.__class__.__name__ == "BoundaryEvent"
                or getattr(child.task_spec, "event_definition", None) is not None]
    event = BpmnEvent(ErrorEventDefinition(code, code=code), payload=error)
    caught = False
    for candidate in boundary:
        definition = getattr(candidate.task_spec, "event_definition", None)
        if isinstance(definition, ErrorEventDefinition) and \
                candidate.state == TaskState.WAITING and definition.catches(candidate, event):
            caught = True
    if not caught:
        raise InstanceError(f"{task.task_spec.bpmn_id}: {message} (no error path for {code!r})")
    for candidate in boundary:
        candidate.data["last_error"] = error
    workflow.catch(event)
    return _step(workflow)


def send_message(workflow: BpmnWorkflow, name: str, payload: Mapping[str, Any]) -> StepReport:
    event = BpmnEvent(MessageEventDefinition(name), payload=dict(payload))
    try:
        workflow.send_event(event)
    except WorkflowException as exc:
        raise NotWaiting(str(exc)) from None
    return _step(workflow)


def complete_user_task(workflow: BpmnWorkflow, task_id: str,
                       data: Mapping[str, Any]) -> StepReport:
    try:
        task = workflow.get_task_from_id(UUID(task_id))
    except (ValueError, WorkflowException, KeyError):
        raise NotWaiting(f"no task {task_id}") from None
    if task is None or task.state != TaskState.READY or not isinstance(task.task_spec, UserTask):
        raise NotWaiting(f"task {task_id} is not an open user task")
    task.data.update(dict(data))
    task.run()
    return _step(workflow)


def fire_timers(workflow: BpmnWorkflow) -> StepReport:
    workflow.refresh_timers()
    return _step(workflow)


def _step(workflow: BpmnWorkflow) -> StepReport:
    try:
        workflow.do_engine_steps()
    except SpiffWorkflowException as exc:
        raise InstanceError(str(exc)) from None
    parked: list[ParkedJob] = []
    for task in workflow.get_tasks(state=TaskState.STARTED):
        spec = task.task_spec
        if not isinstance(spec, ParkedServiceTask) or task._get_internal_data("reported"):
            continue
        task._set_internal_data(reported=True)
        parked.append(ParkedJob(
            task_id=str(task.id), task_name=spec.bpmn_id, operation=spec.operation_name,
            params=dict(task._get_internal_data("params") or {}),
            retries=int(spec.retries) if spec.retries is not None else None,
            backoff_base=spec.retry_backoff_base))
    user_tasks = tuple(
        OpenUserTask(task_id=str(t.id), task_name=t.task_spec.bpmn_id,
                     title=t.task_spec.bpmn_name or t.task_spec.bpmn_id,
                     form=str(t.task_spec.extensions.get("properties", {}).get("form",
                                                                                "manual_retry")),
                     data=_json_safe(t.data))
        for t in workflow.get_tasks(state=TaskState.READY)
        if isinstance(t.task_spec, UserTask))
    wake_at, messages = _waits(workflow)
    completed = workflow.completed
    return StepReport(completed=completed, parked=tuple(parked), user_tasks=user_tasks,
                      wake_at=wake_at, messages=tuple(messages),
                      data=_json_safe(workflow.data if completed else {}))


def _waits(workflow: BpmnWorkflow) -> tuple[datetime | None, tuple[str, ...]]:
    """The earliest timer and the message names of every waiting event (gateways included)."""
    wake_at: datetime | None = None
    messages: list[str] = []
    for task in workflow.get_tasks(state=TaskState.WAITING):
        definition = getattr(task.task_spec, "event_definition", None)
        if definition is None:
            continue
        definitions = getattr(definition, "event_definitions", None) or [definition]
        for item in definitions:
            if isinstance(item, TimerEventDefinition):
                when = _timer_due(task, item)
                if when is not None:
                    wake_at = when if wake_at is None else min(wake_at, when)
            elif isinstance(item, MessageEventDefinition) or \
                    type(item).__name__ == "MessageEventDefinition":
                messages.append(item.name)
    return wake_at, tuple(messages)


def _timer_due(task: Any, definition: TimerEventDefinition) -> datetime | None:
    value = task._get_internal_data("event_value")
    if not isinstance(definition, DurationTimerEventDefinition) and value is None or \
            isinstance(definition, TimeDateEventDefinition):
        value = task.workflow.script_engine.evaluate(task, definition.expression)
    if not value:
        return None
    when = TimerEventDefinition.get_datetime(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def data_of(workflow: BpmnWorkflow) -> dict[str, Any]:
    """The data of the most recently completed task (what the process knows now)."""
    tasks = workflow.get_tasks(state=TaskState.COMPLETED)
    merged: dict[str, Any] = {}
    for task in tasks:
        merged.update(task.data)
    return _json_safe(merged)


def task_states(workflow: BpmnWorkflow) -> list[dict[str, str]]:
    """Per BPMN element, its latest task state (for the diagram overlay)."""
    states: dict[str, str] = {}
    for task in workflow.get_tasks():
        bpmn_id = getattr(task.task_spec, "bpmn_id", None)
        if bpmn_id:
            states[bpmn_id] = TaskState.get_name(task.state)
    return [{"element": k, "state": v} for k, v in states.items()]


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(data), default=str))  # type: ignore[no-any-return]
