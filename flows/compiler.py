"""Compile a runbook into a Prefect flow: one flow per runbook, one task run per step.

The flow's parameters are the runbook's inputs (so Prefect's UI shows a typed form) plus `mode`
(live or drill), `alert`, `incident` and `phase`: ``respond`` runs the runbook's `steps`, ``resolve``
its `on_resolve` steps (the receiver starts that run once the incident resolves), and a drill of
the respond phase goes on to rehearse `on_resolve` in the same run. Each step is a Prefect task
named after the step id with the step's retries and timeout; the scheduling between steps is
`execution.Execution`, the run's body `run_body.RunBody`, a step's task `tasks`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

from prefect import Flow

from siaga.actions import ActionRegistry
from siaga.integrations import default_registry
from siaga.runbook.models import RESPOND, Input, Runbook
from siaga.settings import Settings

from .run_body import RunBody, RunbookFailed

__all__ = ["RunbookFailed", "compile_runbook", "flow_attribute"]


def flow_attribute(runbook_id: str) -> str:
    """The Python name under which a runbook's flow is found: ``payment-gateway-outage`` ->
    ``payment_gateway_outage``."""
    return runbook_id.replace("-", "_")


def compile_runbook(
    runbook: Runbook, registry: ActionRegistry | None = None, *, settings: Settings | None = None,
) -> Flow[..., Any]:
    """The Prefect flow that runs `runbook`; each run reads its settings from its environment,
    unless `settings` are given (a test's)."""
    registry = registry or default_registry()
    body = RunBody.build(runbook, registry, settings)

    async def run_runbook(**parameters: Any) -> dict[str, Any]:
        return await body(parameters)

    run_runbook.__name__ = run_runbook.__qualname__ = flow_attribute(runbook.id)
    run_runbook.__module__ = "siaga.flows.library"
    run_runbook.__doc__ = runbook.description or runbook.title
    signature = _signature(runbook.inputs)
    run_runbook.__signature__ = signature  # type: ignore[attr-defined]
    run_runbook.__annotations__ = {
        name: parameter.annotation for name, parameter in signature.parameters.items()
    } | {"return": dict[str, Any]}
    return Flow(
        fn=run_runbook,
        name=runbook.id,
        description=runbook.title,
        validate_parameters=True,
        persist_result=False,
    )


def _signature(inputs: Mapping[str, Input]) -> inspect.Signature:
    """Typed flow parameters: required inputs first, then inputs with defaults, then the rest."""
    required, optional = [], []
    for name, spec in inputs.items():
        annotation: Any = spec.type.python_type()
        if spec.enum is not None:
            annotation = Literal[tuple(spec.enum)]  # type: ignore[valid-type]
        default = inspect.Parameter.empty if spec.required else spec.default
        parameter = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        (required if spec.required else optional).append(parameter)
    fixed = [
        inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default="live", annotation=Literal["live", "drill"]),
        inspect.Parameter("alert", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None),
        inspect.Parameter("incident", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None),
        inspect.Parameter("requested_by", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("phase", inspect.Parameter.KEYWORD_ONLY, default=RESPOND, annotation=Literal["respond", "resolve"]),
    ]
    return inspect.Signature([*required, *optional, *fixed])


