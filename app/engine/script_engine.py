"""SpiffWorkflow's script engine, rewired so every expression and script runs in the sandbox.

The stock `PythonScriptEngine` hands task data to Python's `eval`/`exec`. SpiffWorkflow calls
the engine for gateway conditions, script tasks, pre/post scripts, timer expressions,
service-task parameters and message payloads (`script_engine.evaluate/execute`), but also
reaches past it for message correlations and process completion conditions
(`script_engine.environment.evaluate`). Replacing the *environment* therefore covers both
routes; the engine subclass adds a sandbox-aware `validate` and refuses `call_service`,
because Leaseflow never runs a service inline: the runtime parks it as a job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine.python_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import (
    BasePythonScriptEngineEnvironment,
)

from . import sandbox
from .sandbox import DEFAULT_LIMITS, ForbiddenExpression, Limits, SandboxError

__all__ = ["SandboxEnvironment", "SandboxScriptEngine", "ServiceCallRefused"]


class ServiceCallRefused(SandboxError):
    """A service task tried to run inline; Leaseflow's runtime must park it as a job."""


class SandboxEnvironment(BasePythonScriptEngineEnvironment):  # type: ignore[misc]
    """Evaluates over task data (plus any external context such as data objects)."""

    def __init__(self, helpers: Mapping[str, Callable[..., Any]] | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__({})
        self.helpers: dict[str, Callable[..., Any]] = dict(helpers or {})
        self.limits = limits

    def evaluate(self, expression: str, context: Mapping[str, Any],
                 external_context: Mapping[str, Any] | None = None) -> Any:
        names = {**(external_context or {}), **context}
        return sandbox.evaluate(expression, names, helpers=self.helpers, limits=self.limits)

    def execute(self, script: str, context: dict[str, Any],
                external_context: Mapping[str, Any] | None = None) -> bool:
        external = dict(external_context or {})
        result = sandbox.execute(script, {**external, **context}, helpers=self.helpers,
                                 limits=self.limits)
        # Written back in place, as the stock environment does (task.data is the context);
        # names that came from the external context are not task data, so they stay out.
        context.clear()
        context.update({k: v for k, v in result.items() if k not in external})
        return True

    def call_service(self, context: Mapping[str, Any], **kwargs: Any) -> Any:
        raise ServiceCallRefused(
            f"service operation {kwargs.get('operation_name')!r} cannot run inside the engine")


class SandboxScriptEngine(PythonScriptEngine):  # type: ignore[misc]
    """The script engine every Leaseflow workflow runs with."""

    def __init__(self, helpers: Mapping[str, Callable[..., Any]] | None = None,
                 limits: Limits = DEFAULT_LIMITS,
                 environment: SandboxEnvironment | None = None) -> None:
        super().__init__(environment=environment or SandboxEnvironment(helpers, limits))

    @property
    def helper_names(self) -> frozenset[str]:
        """Function names expressions may call (give them to `validate_bpmn`)."""
        return frozenset(getattr(self.environment, "helpers", {}))

    # evaluate/execute: the stock methods wrap errors without keeping them; these keep the
    # sandbox error as __cause__ so the runtime can tell a refused expression from bad data.

    def evaluate(self, task: Any, expression: str,
                 external_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except SandboxError as err:
            raise WorkflowTaskException(f"expression '{expression}' failed: {err}", task=task,
                                        exception=err) from err

    def execute(self, task: Any, script: str,
                external_context: Mapping[str, Any] | None = None) -> bool:
        try:
            return bool(self.environment.execute(script, task.data, external_context or {}))
        except SandboxError as err:
            raise WorkflowTaskException(f"script failed: {err}", task=task,
                                        exception=err) from err

    def validate(self, expression: str) -> None:
        problems = sandbox.check_expression(expression, self.helper_names)
        if problems:
            raise ForbiddenExpression(problems)

    def call_service(self, task: Any, **kwargs: Any) -> Any:
        # The stock method also has a NameError bug in its error path (3.2.0); never use it.
        err = ServiceCallRefused(
            f"service task {getattr(task.task_spec, 'bpmn_id', '?')!r} tried to call "
            f"{kwargs.get('operation_name')!r} inline; the runtime must park it as a job")
        raise WorkflowTaskException(str(err), task=task, exception=err) from err
