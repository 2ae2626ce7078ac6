"""The Prefect layer: compile runbooks into flows and serve them as deployments.

Installed as ``siaga.flows`` from the top-level folder ``flows/`` (pyproject's package-dir): import
it as ``siaga.flows``. Its part and the directions it may import: docs/parts.toml."""

from .compiler import RunbookFailed, compile_runbook

__all__ = ["RunbookFailed", "compile_runbook"]
