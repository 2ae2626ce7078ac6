"""The Prefect layer: compile runbooks into flows and serve them as deployments.

Installed as ``siaga.flows`` from the top-level folder ``flows/`` (pyproject's package-dir): import
it as ``siaga.flows``. Its part and the directions it may import: docs/parts.toml.

The compiler is imported when first asked for (PEP 562), not with the package: a command that
only reads Siaga's store, such as `siaga approvals`, then starts without Prefect's engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiler import RunbookFailed, compile_runbook

__all__ = ["RunbookFailed", "compile_runbook"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
