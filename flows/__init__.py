"""The Prefect layer: compile runbooks into flows and serve them as deployments."""

from .compiler import RunbookFailed, compile_runbook

__all__ = ["RunbookFailed", "compile_runbook"]
