"""Secrets kept in Prefect Secret blocks: where a connection's `secret:` is looked up when a stack
is running (after the environment, see `siaga.connections`)."""

from __future__ import annotations

from prefect.exceptions import ObjectNotFound

__all__ = ["prefect_secret"]


def prefect_secret(name: str) -> str | None:
    """A secret from the Prefect Secret block `name`, if there is one."""
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name, _sync=True).get())  # type: ignore[call-arg]
    except (ValueError, ObjectNotFound):
        return None
