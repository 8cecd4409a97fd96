"""SpiffWorkflow running real diagrams with the sandboxed script engine."""

from __future__ import annotations

import datetime as dt

import pytest
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.specs.event_definitions.message import CorrelationProperty
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.util.task import TaskState

from app.engine.sandbox import ExpressionFailed, ForbiddenExpression
from app.engine.script_engine import SandboxScriptEngine, ServiceCallRefused
from lf_support import read_case


def _workflow(bpmn: bytes, process_id: str, data: dict, engine=None) -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(bpmn)
    workflow = BpmnWorkflow(parser.get_spec(process_id),
                            script_engine=engine or SandboxScriptEngine())
    workflow.get_tasks(state=TaskState.READY)[0].data.update(data)
    return workflow


def _finished(workflow: BpmnWorkflow) -> list[str]:
    return [t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.COMPLETED)
            if t.task_spec.bpmn_id]


def _cause(err: BaseException) -> BaseException | None:
    return getattr(err, "exception", None) or err.__cause__


@pytest.mark.parametrize(("pool", "taken", "end", "count"), [
    (["10.0.0.1", "10.0.0.2"], ["10.0.0.1"], "end_free", 1),
    (["10.0.0.1"], ["10.0.0.1"], "end_exhausted", 0),
])
def test_script_task_and_exclusive_gateway_run_in_the_sandbox(pool, taken, end, count):
    workflow = _workflow(read_case("valid_script_gateway"), "script_gateway",
                         {"pool": pool, "taken": taken,
                          "lease_request": {"subnet": "10.0.0.0/24"}})
    workflow.do_engine_steps()
    assert workflow.completed
    assert end in _finished(workflow)
    data = workflow.last_task.data
    assert data["count"] == count
    assert data["summary"] == f"{count} free in 10.0.0.0/24"


def _evil(bpmn: bytes, old: bytes, new: bytes) -> bytes:
    assert old in bpmn
    return bpmn.replace(old, new)


def test_an_escape_that_skipped_validation_fails_safely_in_a_script_task():
    bpmn = _evil(read_case("valid_script_gateway"), b"pool_size = len(pool)",
                 b"pool_size = ().__class__.__mro__[1].__subclasses__()")
    data = {"pool": [], "taken": [], "lease_request": {"subnet": "10.0.0.0/24"}}
    workflow = _workflow(bpmn, "script_gateway", data)
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()
    assert isinstance(_cause(err.value), ForbiddenExpression)
    task = workflow.get_tasks(state=TaskState.ERROR)[0]
    assert task.task_spec.bpmn_id == "compute"
    assert "free" not in task.data  # a failing script leaves the task data as it was


def test_an_escape_in_a_gateway_condition_fails_safely():
    bpmn = _evil(read_case("valid_script_gateway"), b"count &gt; 0 and",
                 b"__import__('os').system('true') and")
    data = {"pool": ["10.0.0.1"], "taken": [], "lease_request": {"subnet": "10.0.0.0/24"}}
    workflow = _workflow(bpmn, "script_gateway", data)
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()
    assert isinstance(_cause(err.value), ForbiddenExpression)
    assert not workflow.completed


def test_a_runaway_script_is_stopped():
    bpmn = _evil(read_case("valid_script_gateway"), b"pool_size = len(pool)",
                 b"pool_size = 0\nwhile True:\n    pool_size += 1")
    workflow = _workflow(bpmn, "script_gateway",
                         {"pool": [], "taken": [], "lease_request": {"subnet": "10.0.0.0/24"}})
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()
    assert isinstance(_cause(err.value), ExpressionFailed)


def test_service_parameters_are_evaluated_in_the_sandbox_and_inline_calls_refused():
    workflow = _workflow(read_case("valid_lease"), "lease_gate_valid",
                         {"lease_request": {"subnet": "10.0.0.0/24", "client_id": "aa"}})
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()  # the stock service task would call out inline
    assert isinstance(_cause(err.value), ServiceCallRefused)
    reserve = workflow.get_tasks(state=TaskState.ERROR)[0]
    assert reserve.task_spec.bpmn_id == "reserve"
    params = reserve.task_spec.evaluate_params(reserve)
    assert params == {"subnet": {"value": "10.0.0.0/24", "type": "str"},
                      "client_id": {"value": "aa", "type": "str"},
                      "requested_ip": {"value": "", "type": "str"}}


def test_a_hostile_parameter_expression_is_refused_at_run_time():
    bpmn = _evil(read_case("valid_lease"), b"value=\"lease_request['subnet']\"",
                 b"value=\"open('/etc/passwd').read()\"")
    workflow = _workflow(bpmn, "lease_gate_valid",
                         {"lease_request": {"subnet": "10.0.0.0/24", "client_id": "aa"}})
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()  # parameters are evaluated before any call
    assert isinstance(_cause(err.value), ForbiddenExpression)


def test_timer_expressions_are_evaluated_in_the_sandbox():
    workflow = _workflow(read_case("valid_timer_message"), "valid_timer_message",
                         {"lease_request": {"lease_time": 120}})
    workflow.do_engine_steps()
    workflow.refresh_waiting_tasks()
    # the event-based gateway waits for its events and keeps the timer's due time
    gateway = next(t for t in workflow.get_tasks() if t.task_spec.bpmn_id == "bound")
    assert gateway.state == TaskState.WAITING
    due = dt.datetime.fromisoformat(gateway.internal_data["event_value"])
    remaining = (due - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < remaining <= 120


def test_a_hostile_timer_expression_fails_safely():
    bpmn = _evil(read_case("valid_timer_message"),
                 b"f\"PT{lease_request.get('lease_time', 3600)}S\"",
                 b"[c for c in ().__class__.__bases__]")
    workflow = _workflow(bpmn, "valid_timer_message", {"lease_request": {}})
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()  # the waiting gateway computes its timer's due time
        workflow.refresh_waiting_tasks()
    assert isinstance(_cause(err.value), ForbiddenExpression)


def test_message_then_service_task_refuses_to_run_inline():
    workflow = _workflow(read_case("valid_timer_message"), "valid_timer_message",
                         {"lease_request": {"subnet": "10.0.0.0/24"},
                          "reservation": {"ip": "10.0.0.5"}})
    workflow.do_engine_steps()
    workflow.catch(BpmnEvent(MessageEventDefinition("release"), payload={}))
    with pytest.raises(WorkflowTaskException) as err:
        workflow.do_engine_steps()
    assert isinstance(_cause(err.value), ServiceCallRefused)
    assert "released" in _finished(workflow)


def test_message_correlation_expressions_use_the_sandbox():
    engine = SandboxScriptEngine()
    definition = MessageEventDefinition("renew")
    good = [CorrelationProperty("lease_ip", "lease['ip']", ["lease_key"])]
    assert definition.calculate_correlations(engine, good, {"lease": {"ip": "10.0.0.5"}}) == {
        "lease_key": {"lease_ip": "10.0.0.5"}}
    evil = [CorrelationProperty("x", "lease.__class__", ["lease_key"])]
    with pytest.raises(ForbiddenExpression):
        definition.calculate_correlations(engine, evil, {"lease": {}})


def test_helpers_are_offered_to_expressions_and_known_to_validation():
    engine = SandboxScriptEngine(helpers={"double": lambda n: 2 * n})
    assert engine.helper_names == {"double"}
    assert engine.environment.evaluate("double(x)", {"x": 21}) == 42
    engine.validate("double(x) > 3")
    with pytest.raises(ForbiddenExpression):
        engine.validate("triple(x)")


def test_external_context_is_readable_but_not_written_back():
    engine = SandboxScriptEngine()
    context = {"a": 1}
    engine.environment.execute("b = a + shared['n']\nshared = None", context, {"shared": {"n": 2}})
    assert context == {"a": 1, "b": 3}
