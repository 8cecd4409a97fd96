"""The upload gate: is this BPMN file safe and fit to run on Leaseflow?

`validate_bpmn` never raises for bad input and never stops at the first problem: it returns a
`ValidationReport` listing every problem it found, each with the element id, a stable code
and a sentence saying what to do, so the API can answer 422 with all of them at once.

Checks, in order (later ones run only when the file could be read at all):

1. size cap, then a parse with DTDs, entities and network off; any DOCTYPE is refused
   (`too_large`, `doctype_forbidden`, `malformed_xml`, `not_bpmn`);
2. the BPMN 2.0 XSD plus SpiffWorkflow's extension schema (`schema_invalid`);
3. SpiffWorkflow's own parser, as the engine will run it (`engine_rejected`);
4. platform rules, on the tree:
   - service tasks: `spiffworkflow:serviceTaskOperator` naming a catalogue operation
     (`service_task_without_operation`, `unknown_operation`), parameters known, typed as the
     operation declares, required ones present, values safe expressions (`unknown_parameter`,
     `duplicate_parameter`, `wrong_parameter_type`, `missing_parameter`,
     `parameter_without_value`, `unsafe_expression`); a retry policy or an error path
     (`no_retry_or_error_path`, `invalid_retry_policy`);
   - user tasks: a form (`user_task_without_form`). The convention: a
     `spiffworkflow:properties` property `formJsonSchemaFilename` naming a JSON-schema form,
     or the property `form` with the value `manual_retry` (`MANUAL_RETRY_FORM`), which is the
     platform's standard "Approve manual retry" form (actions retry / alternative / abort);
   - every script, condition, timer, payload and correlation expression passes the sandbox
     (`unsafe_script`, `unsafe_expression`, `script_missing`);
   - timers: exactly one of timeDate/timeDuration/timeCycle, a safe expression, and a literal
     in ISO 8601 form when it is a literal (`timer_malformed`);
   - messages, errors and signals reference declared ones (`undeclared_message`,
     `undeclared_error`, `undeclared_signal`);
   - graph: a start event, an end event reachable from it, no unreachable elements, no loops
     without a way out, no flows to unknown elements (`no_start_event`, `no_end_event`,
     `end_unreachable`, `unreachable_element`, `no_path_to_end`, `dangling_flow`,
     `no_executable_process`).

A file the checks themselves fail on is refused too (`validator_error`): the gate fails closed.
"""

from __future__ import annotations

import ast
import functools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.spiff.parser.process import SPIFF_XSD

from .canonical import BPMN_NS, DEFAULT_MAX_BYTES, SPIFF_NS, BpmnXmlError, canonical_xml, safe_parse
from .sandbox import check_expression, check_script

__all__ = [
    "FORM_PROPERTY",
    "FORM_SCHEMA_PROPERTY",
    "MANUAL_RETRY_FORM",
    "PARAM_TYPES",
    "OperationSchema",
    "Problem",
    "ValidationReport",
    "validate_bpmn",
]

MANUAL_RETRY_FORM = "manual_retry"
FORM_PROPERTY = "form"
FORM_SCHEMA_PROPERTY = "formJsonSchemaFilename"
PARAM_TYPES = frozenset({"str", "int", "float", "bool", "dict", "list", "any"})
MAX_RETRIES = 100
MAX_BACKOFF_BASE = 86_400

_NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}


@dataclass(frozen=True, kw_only=True)
class OperationSchema:
    """What a service-task operation accepts (built by the operations registry)."""

    name: str
    params: Mapping[str, str] = field(default_factory=dict)  # param -> one of PARAM_TYPES
    required: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = {t for t in self.params.values() if t not in PARAM_TYPES}
        if unknown:
            raise ValueError(f"operation {self.name}: unknown parameter types {sorted(unknown)}")
        if not self.required <= set(self.params):
            raise ValueError(f"operation {self.name}: required parameters not in params")


@dataclass(frozen=True, kw_only=True)
class Problem:
    element_id: str  # "" when the problem is about the whole file
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"element_id": self.element_id, "code": self.code, "message": self.message}


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    problems: tuple[Problem, ...]
    process_ids: tuple[str, ...] = ()
    canonical: bytes | None = None  # canonical XML, when the file could be parsed

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def canonical_xml(self) -> bytes | None:
        """The same as `canonical` (the name the definitions service uses)."""
        return self.canonical

    def codes(self) -> set[tuple[str, str]]:
        return {(p.code, p.element_id) for p in self.problems}


def validate_bpmn(data: bytes | str, catalogue: Mapping[str, OperationSchema], *,
                  functions: Iterable[str] = (),
                  max_bytes: int = DEFAULT_MAX_BYTES) -> ValidationReport:
    """Check an uploaded BPMN file; `functions` are helper names expressions may call."""
    try:
        tree = safe_parse(data, max_bytes=max_bytes)
    except BpmnXmlError as err:
        return ValidationReport(problems=(Problem(element_id="", code=err.code,
                                                  message=str(err)),))
    root = tree.getroot()
    if root.tag != f"{{{BPMN_NS}}}definitions":
        return ValidationReport(problems=(Problem(
            element_id=root.get("id", ""), code="not_bpmn",
            message=f"the root element is <{etree.QName(root).localname}>, not a BPMN 2.0 "
                    f"<definitions> in namespace {BPMN_NS}. Upload a .bpmn file"),))
    checker = _Checker(root, catalogue, frozenset(functions))
    try:
        if checker.check_schema():
            checker.check_engine_parse()
        checker.check_rules()
    except Exception as err:  # noqa: BLE001 - fail closed: a file we cannot check is refused
        checker.add("", "validator_error", f"the file could not be checked completely "
                                           f"({type(err).__name__}: {err}); it was not stored")
    if checker.engine_crash is not None and not checker.problems:
        checker.problems.append(checker.engine_crash)
    try:
        canonical = canonical_xml(root)
    except Exception:  # noqa: BLE001 - canonical form is a convenience, not a check
        canonical = None
    return ValidationReport(problems=tuple(checker.problems),
                            process_ids=tuple(checker.process_ids), canonical=canonical)


# --- the checks --------------------------------------------------------------------------

_local_validator = threading.local()


def _validator() -> BpmnValidator:
    # lxml schema objects keep an error log per instance: one per thread, built once.
    validator = getattr(_local_validator, "v", None)
    if validator is None:
        validator = BpmnValidator(imports={"spiffworkflow": SPIFF_XSD})
        _local_validator.v = validator
    return validator


_FLOW_NODES = frozenset({
    "startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent",
    "boundaryEvent", "task", "userTask", "manualTask", "serviceTask", "scriptTask", "sendTask",
    "receiveTask", "businessRuleTask", "callActivity", "subProcess", "transaction",
    "adHocSubProcess", "exclusiveGateway", "inclusiveGateway", "parallelGateway",
    "eventBasedGateway", "complexGateway",
})
_SCOPES = ("process", "subProcess", "transaction")
_ISO_LOOKING = re.compile(r"(R\d*/)?P[\dYMWDTHS.,]+|\d{4}-\d\d-\d\d(T[\d:.]+Z?)?", re.I)
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
    "list": (list, tuple),
}


@functools.lru_cache(maxsize=256)
def _compiled_xpath(path: str) -> etree.XPath:
    return etree.XPath(path, namespaces=_NS)


@functools.lru_cache(maxsize=4096)
def _literal(src: str) -> tuple[bool, Any]:
    """(True, value) when the text is a Python literal, else (False, None)."""
    try:
        return True, ast.literal_eval(src.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _owner_id(el: etree._Element) -> str:
    """The id of the nearest BPMN element (this one or an ancestor) that has one.

    Extension elements have "id" attributes that are not element ids (the operator's id is
    the operation name), so only BPMN-namespace elements count.
    """
    node: etree._Element | None = el
    while node is not None:
        if (isinstance(node.tag, str) and etree.QName(node).namespace == BPMN_NS
                and node.get("id") and not _local(node).endswith("EventDefinition")):
            return str(node.get("id"))
        node = node.getparent()
    return ""


def _describe(el: etree._Element) -> str:
    name = el.get("name")
    kind = _local(el)
    return f"{kind} '{name}' ({el.get('id')})" if name else f"{kind} {el.get('id')}"


class _Checker:
    def __init__(self, root: etree._Element, catalogue: Mapping[str, OperationSchema],
                 functions: frozenset[str]) -> None:
        self.root = root
        self.catalogue = catalogue
        self.functions = functions
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, str, str]] = set()
        self.engine_crash: Problem | None = None
        self._boundaries: dict[str | None, list[etree._Element]] | None = None
        self._flow_sources: set[str | None] = set()
        self.process_ids: list[str] = [
            p.get("id", "") for p in self.xpath("bpmn:process")
            if p.get("isExecutable", "false") == "true"]

    def xpath(self, path: str, node: etree._Element | None = None) -> list[Any]:
        return list(_compiled_xpath(path)(self.root if node is None else node))

    def add(self, element_id: str, code: str, message: str) -> None:
        key = (element_id, code, message)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(Problem(element_id=element_id, code=code, message=message))

    # -- schema and engine --

    def check_schema(self) -> bool:
        validator = _validator()
        doc = etree.fromstring(etree.tostring(self.root))
        validator.preprocess(doc)  # SpiffWorkflow's fix-up for bpmn-js correlation output
        if validator.validator.validate(doc):
            return True
        by_line: dict[int, etree._Element] = {}
        for el in doc.iter():
            if isinstance(el.tag, str) and el.sourceline is not None:
                by_line.setdefault(el.sourceline, el)
        for entry in validator.validator.error_log:
            owner = by_line.get(entry.line)
            element_id = _owner_id(owner) if owner is not None else ""
            message = re.sub(r"\{[^}]*\}", "", entry.message)  # drop namespace URIs
            self.add(element_id, "schema_invalid",
                     f"line {entry.line}: {message} Fix this element so the file follows the "
                     f"BPMN 2.0 schema and SpiffWorkflow's extension schema")
        return False

    def check_engine_parse(self) -> None:
        parser = SpiffBpmnParser()
        try:
            parser.add_bpmn_xml(etree.fromstring(etree.tostring(self.root)), filename="upload")
            ids = parser.get_process_ids()
        except Exception as err:  # noqa: BLE001 - any parser failure is a rejection, not a 500
            self._engine_problem(err)
            return
        for process_id in ids:
            try:
                parser.get_spec(process_id)
            except Exception as err:  # noqa: BLE001
                self._engine_problem(err, default_id=process_id)

    def _engine_problem(self, err: Exception, default_id: str = "") -> None:
        if not isinstance(err, ValidationException):
            # SpiffWorkflow sometimes crashes on a broken file instead of explaining it
            # (3.2.0 raises a TypeError for an undeclared message); the platform rules
            # usually say what is wrong in plain words, so this is kept only as a last resort
            self.engine_crash = Problem(element_id=default_id, code="engine_rejected",
                                        message=f"the engine cannot read this file: "
                                                f"{type(err).__name__}: {err}")
            return
        element_id = getattr(err, "id", "") or default_id
        message = str(err.args[0]) if err.args else str(err)
        self.add(element_id, "engine_rejected",
                 f"the engine rejects this element: {message}. Fix it in the modeler")

    # -- platform rules --

    def check_rules(self) -> None:
        if not self.xpath("bpmn:process"):
            self.add(self.root.get("id", ""), "no_executable_process",
                     "the file contains no process; draw one and mark it executable")
        elif not self.process_ids:
            self.add(self.root.get("id", ""), "no_executable_process",
                     "no process is marked executable; set isExecutable=\"true\" on the "
                     "process to run")
        self.check_service_tasks()
        self.check_user_tasks()
        self.check_scripts_and_conditions()
        self.check_timers()
        self.check_references()
        for scope in self.xpath(" | ".join(f"//bpmn:{s}" for s in _SCOPES)):
            self.check_graph(scope)

    def expression(self, element_id: str, what: str, src: str | None,
                   code: str = "unsafe_expression") -> None:
        if src is None or not src.strip():
            self.add(element_id, code, f"the {what} is empty; write an expression")
            return
        problems = check_expression(src, self.functions)
        if problems:
            self.add(element_id, code, f"the {what} `{_short(src)}` is refused: "
                                       + "; ".join(problems))

    def script(self, element_id: str, what: str, src: str | None) -> None:
        problems = check_script(src or "", self.functions)
        if problems:
            self.add(element_id, "unsafe_script", f"the {what} is refused: " + "; ".join(problems))

    def check_service_tasks(self) -> None:
        for task in self.xpath("//bpmn:serviceTask"):
            task_id = task.get("id", "")
            operators = self.xpath("bpmn:extensionElements/spiffworkflow:serviceTaskOperator",
                                   task)
            if not operators:
                self.add(task_id, "service_task_without_operation",
                         f"{_describe(task)} names no operation; add a "
                         f"spiffworkflow:serviceTaskOperator with one of: "
                         f"{', '.join(sorted(self.catalogue)) or '(none registered)'}")
                has_retry = False
            else:
                has_retry = self.check_operator(task, operators[0])
            if not has_retry and not self.has_error_path(task):
                self.add(task_id, "no_retry_or_error_path",
                         f"{_describe(task)} has neither a retry policy nor an error path; add "
                         f"<spiffworkflow:retry retries=\"3\" backoff_base=\"2\"/> to its "
                         f"operator or attach an error boundary event leading to a "
                         f"\"Approve manual retry\" user task")

    def check_operator(self, task: etree._Element, operator: etree._Element) -> bool:
        """Check the operator; return True when it carries a usable retry policy."""
        task_id = task.get("id", "")
        name = operator.get("id", "")
        schema = self.catalogue.get(name)
        if schema is None:
            self.add(task_id, "unknown_operation",
                     f"{_describe(task)} calls unknown operation '{name}'; use one of: "
                     f"{', '.join(sorted(self.catalogue)) or '(none registered)'}")
        seen: set[str] = set()
        for param in self.xpath(".//spiffworkflow:parameter", operator):
            pid = param.get("id", "")
            declared = param.get("type")
            value = param.get("value")
            where = f"parameter '{pid}' of {_describe(task)}"
            if pid in seen:
                self.add(task_id, "duplicate_parameter", f"{where} is given twice; keep one")
            seen.add(pid)
            expected = schema.params.get(pid) if schema is not None else None
            if schema is not None and pid not in schema.params:
                self.add(task_id, "unknown_parameter",
                         f"{where} is not a parameter of {name}; its parameters are: "
                         f"{', '.join(sorted(schema.params)) or '(none)'}")
            if declared not in PARAM_TYPES:
                self.add(task_id, "wrong_parameter_type",
                         f"{where} has type {declared!r}; use one of "
                         f"{', '.join(sorted(PARAM_TYPES))}"
                         + (f" (the operation expects {expected})" if expected else ""))
            elif expected not in (None, "any") and declared != expected:
                self.add(task_id, "wrong_parameter_type",
                         f"{where} is declared {declared} but {name} expects {expected}; "
                         f"set type=\"{expected}\" and give a value of that type")
            if value is None:
                self.add(task_id, "parameter_without_value",
                         f"{where} has no value; give an expression such as "
                         f"lease_request['{pid}']")
                continue
            self.expression(task_id, f"value of {where}", value)
            literal_type = expected if expected not in (None, "any") else declared
            self.check_literal(task_id, where, value, literal_type)
        if schema is not None:
            for missing in sorted(schema.required - seen):
                self.add(task_id, "missing_parameter",
                         f"{_describe(task)} does not give required parameter '{missing}' "
                         f"({schema.params[missing]}) of {name}; add it")
        retries = self.xpath("spiffworkflow:retry", operator)
        if not retries:
            return False
        retry = retries[0]
        ok = True
        count = _int_or_none(retry.get("retries"))
        if count is None or not 1 <= count <= MAX_RETRIES:
            self.add(task_id, "invalid_retry_policy",
                     f"the retry policy of {_describe(task)} needs retries=\"N\" with N from "
                     f"1 to {MAX_RETRIES}")
            ok = False
        base = retry.get("backoff_base")
        if base is not None:
            number = _int_or_none(base)
            if number is None or not 1 <= number <= MAX_BACKOFF_BASE:
                self.add(task_id, "invalid_retry_policy",
                         f"the retry policy of {_describe(task)} needs backoff_base as a whole "
                         f"number of seconds from 1 to {MAX_BACKOFF_BASE}")
                ok = False
        return ok

    def check_literal(self, task_id: str, where: str, value: str, type_name: str | None) -> None:
        if type_name not in _PY_TYPES:
            return
        is_literal, literal = _literal(value)
        if not is_literal:
            return  # an expression over task data: its type is known only at run time
        allowed = _PY_TYPES[type_name]
        if isinstance(literal, bool) and type_name != "bool" or not isinstance(literal, allowed):
            self.add(task_id, "wrong_parameter_type",
                     f"{where} is the literal {_short(value)}, which is not of type "
                     f"{type_name}; give a {type_name} value")

    def has_error_path(self, task: etree._Element) -> bool:
        if self._boundaries is None:
            # indexed once: one XPath per task would make a 2 MB upload take quadratic time
            self._boundaries, self._flow_sources = {}, set()
            for boundary in self.xpath("//bpmn:boundaryEvent"):
                self._boundaries.setdefault(boundary.get("attachedToRef"), []).append(boundary)
            self._flow_sources = {f.get("sourceRef") for f in self.xpath("//bpmn:sequenceFlow")}
        for boundary in self._boundaries.get(task.get("id", ""), []):
            if not self.xpath("bpmn:errorEventDefinition", boundary):
                continue
            if boundary.get("id") in self._flow_sources:
                return True
            self.add(boundary.get("id", ""), "no_retry_or_error_path",
                     f"the error boundary event on {_describe(task)} leads nowhere; connect it "
                     f"to the \"Approve manual retry\" user task")
        return False

    def check_user_tasks(self) -> None:
        for task in self.xpath("//bpmn:userTask"):
            props = {p.get("name", ""): (p.get("value") or "").strip() for p in self.xpath(
                "bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property", task)}
            if props.get(FORM_SCHEMA_PROPERTY) or props.get(FORM_PROPERTY) == MANUAL_RETRY_FORM:
                continue
            extra = ""
            if props.get(FORM_PROPERTY):
                extra = f" (form '{props[FORM_PROPERTY]}' is not a known standard form)"
            self.add(task.get("id", ""), "user_task_without_form",
                     f"{_describe(task)} has no form{extra}; add a spiffworkflow:property "
                     f"'{FORM_SCHEMA_PROPERTY}' naming its form, or the property "
                     f"'{FORM_PROPERTY}' = '{MANUAL_RETRY_FORM}' for the standard manual-retry "
                     f"form")

    def check_scripts_and_conditions(self) -> None:
        for task in self.xpath("//bpmn:scriptTask"):
            scripts = self.xpath("bpmn:script", task)
            if not scripts or not (scripts[0].text or "").strip():
                self.add(task.get("id", ""), "script_missing",
                         f"{_describe(task)} has no script; write one or use a plain task")
            else:
                self.script(task.get("id", ""), f"script of {_describe(task)}", scripts[0].text)
        for node in self.xpath("//spiffworkflow:preScript | //spiffworkflow:postScript"):
            self.script(_owner_id(node), _local(node), node.text)
        for cond in self.xpath("//bpmn:sequenceFlow/bpmn:conditionExpression"):
            flow = cond.getparent()
            self.expression(flow.get("id", ""), f"condition of flow {flow.get('id')}", cond.text)
        for path, what in (("//bpmn:conditionalEventDefinition/bpmn:condition", "condition"),
                           ("//bpmn:loopCardinality", "loop cardinality"),
                           ("//bpmn:completionCondition", "completion condition"),
                           ("//bpmn:loopCondition", "loop condition"),
                           ("//spiffworkflow:messagePayload", "message payload"),
                           ("//spiffworkflow:payloadExpression", "payload expression"),
                           ("//spiffworkflow:processVariableCorrelation/spiffworkflow:expression",
                            "correlation expression")):
            for node in self.xpath(path):
                self.expression(_owner_id(node.getparent()), what, node.text)
        for node in self.xpath("//bpmn:correlationPropertyRetrievalExpression/*"):
            self.expression(_owner_id(node), "correlation retrieval expression", node.text)
        for node in self.xpath("//spiffworkflow:messageVariable | //spiffworkflow:variableName"):
            name = (node.text or "").strip()
            if not name.isidentifier() or name.startswith("_"):
                self.add(_owner_id(node.getparent()), "unsafe_expression",
                         f"{_local(node)} {name!r} must be a plain variable name that does not "
                         f"start with an underscore")

    def check_timers(self) -> None:
        parsers = {
            "timeDate": TimerEventDefinition.get_datetime,
            "timeDuration": TimerEventDefinition.parse_iso_duration,
            "timeCycle": TimerEventDefinition.parse_iso_recurring_interval,
        }
        for timer in self.xpath("//bpmn:timerEventDefinition"):
            event_id = _owner_id(timer.getparent())
            parts = [c for c in timer if _local(c) in parsers]
            if len(parts) != 1:
                self.add(event_id, "timer_malformed",
                         f"the timer of {event_id} has {len(parts)} of timeDate/timeDuration/"
                         f"timeCycle; give exactly one, e.g. <bpmn:timeDuration>\"PT1H\""
                         f"</bpmn:timeDuration>")
                continue
            part = parts[0]
            kind, src = _local(part), (part.text or "").strip()
            before = len(self.problems)
            self.expression(event_id, f"{kind} expression", src, code="timer_malformed")
            if len(self.problems) > before:
                continue
            if _ISO_LOOKING.fullmatch(src):
                self.add(event_id, "timer_malformed",
                         f"the {kind} `{src}` is read as a variable name; timer expressions are "
                         f"Python expressions, so put the ISO 8601 text in quotes: \"{src}\"")
                continue
            is_literal, literal = _literal(src)
            if not is_literal:
                continue  # computed from task data at run time
            if not isinstance(literal, str):
                self.add(event_id, "timer_malformed",
                         f"the {kind} {src} must be ISO 8601 text such as \"PT1H\"")
                continue
            try:
                parsed = parsers[kind](literal)
            except Exception:  # noqa: BLE001 - SpiffWorkflow raises plain Exception
                parsed = None
            if not parsed:
                self.add(event_id, "timer_malformed",
                         f"the {kind} {literal!r} is not valid ISO 8601 "
                         f"({_TIMER_EXAMPLES[kind]})")

    def check_references(self) -> None:
        declared = {
            "message": {m.get("id") for m in self.xpath("//bpmn:message")},
            "error": {e.get("id") for e in self.xpath("//bpmn:error")},
            "signal": {s.get("id") for s in self.xpath("//bpmn:signal")},
        }
        for message in self.xpath("//bpmn:message"):
            if not message.get("name"):
                self.add(message.get("id", ""), "undeclared_message",
                         f"message {message.get('id')} has no name; name it (events are "
                         f"matched by message name)")
        refs = (
            ("//bpmn:messageEventDefinition", "messageRef", "message", "undeclared_message"),
            ("//bpmn:sendTask | //bpmn:receiveTask", "messageRef", "message",
             "undeclared_message"),
            ("//bpmn:correlationPropertyRetrievalExpression", "messageRef", "message",
             "undeclared_message"),
            ("//bpmn:errorEventDefinition", "errorRef", "error", "undeclared_error"),
            ("//bpmn:signalEventDefinition", "signalRef", "signal", "undeclared_signal"),
        )
        for path, attr, kind, code in refs:
            for node in self.xpath(path):
                ref = node.get(attr)
                owner = node if _local(node) in ("sendTask", "receiveTask") else node.getparent()
                element_id = _owner_id(owner)
                if ref is None:
                    required = kind == "message" or _local(owner) != "endEvent"
                    if required and not (kind == "error" and _local(owner) == "boundaryEvent"):
                        self.add(element_id, code,
                                 f"{element_id} uses a {kind} without naming it; set {attr} to "
                                 f"a declared bpmn:{kind}")
                elif ref not in declared[kind]:
                    self.add(element_id, code,
                             f"{element_id} refers to {kind} '{ref}', which is not declared; "
                             f"add <bpmn:{kind} id=\"{ref}\" name=\"...\"/> to the definitions "
                             f"or pick a declared one")

    def check_graph(self, scope: etree._Element) -> None:
        scope_id = scope.get("id", "")
        nodes = {c.get("id"): c for c in scope if _local(c) in _FLOW_NODES and c.get("id")}
        edges: dict[str, list[str]] = {n: [] for n in nodes}
        for flow in self.xpath("bpmn:sequenceFlow", scope):
            source, target = flow.get("sourceRef"), flow.get("targetRef")
            bad = [r for r in (source, target) if r not in nodes]
            if bad:
                self.add(flow.get("id", ""), "dangling_flow",
                         f"sequence flow {flow.get('id')} connects {bad[0]!r}, which is not an "
                         f"element of {scope_id}; reconnect or delete the flow")
                continue
            edges[source].append(target)
        for node_id, node in nodes.items():
            if _local(node) == "boundaryEvent":
                host = node.get("attachedToRef")
                if host in edges:
                    edges[host].append(node_id)
        kind = _local(scope)
        if kind == "process" and scope.get("isExecutable", "false") != "true":
            return
        starts = [n for n, el in nodes.items() if _local(el) == "startEvent"]
        # event subprocesses start on their own trigger
        roots = starts + [n for n, el in nodes.items() if el.get("triggeredByEvent") == "true"]
        ends = {n for n, el in nodes.items() if _local(el) == "endEvent"}
        if not starts and scope.get("triggeredByEvent") != "true":
            self.add(scope_id, "no_start_event",
                     f"{_describe(scope)} has no start event; add one and connect it")
            return
        if not ends:
            self.add(scope_id, "no_end_event",
                     f"{_describe(scope)} has no end event; add one and connect the last step "
                     f"to it")
            return
        reached = _reach(roots, edges)
        if not ends & reached:
            self.add(scope_id, "end_unreachable",
                     f"no end event of {_describe(scope)} can be reached from its start; "
                     f"connect the flow to an end event")
        for node_id in nodes:
            if node_id not in reached:
                self.add(node_id, "unreachable_element",
                         f"{_describe(nodes[node_id])} can never be reached from the start; "
                         f"connect it or delete it")
        # loops with no way out: reachable nodes from which neither an end event nor an
        # implicit end (a node with nothing after it) can be reached
        sinks = ends | {n for n, out in edges.items() if not out}
        backwards: dict[str, list[str]] = {n: [] for n in nodes}
        for source, targets in edges.items():
            for target in targets:
                backwards[target].append(source)
        finishing = _reach(list(sinks), backwards)
        for node_id in nodes:
            if node_id in reached and node_id not in finishing:
                self.add(node_id, "no_path_to_end",
                         f"from {_describe(nodes[node_id])} no path leads to an end event, so "
                         f"an instance would loop forever; add a way out")


_TIMER_EXAMPLES = {
    "timeDate": "e.g. \"2030-01-31T12:00:00Z\"",
    "timeDuration": "e.g. \"PT1H\" or \"P1D\"",
    "timeCycle": "e.g. \"R3/PT10M\"",
}


def _reach(roots: list[str], edges: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(edges.get(node, ()))
    return seen


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _short(src: str, limit: int = 80) -> str:
    flat = " ".join(src.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

