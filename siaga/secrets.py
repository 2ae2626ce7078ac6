"""Secrets are referenced in runbooks and configuration as ``secret://NAME``, never written there.

``secret://payments-switch-token`` is read from the environment variable
``SIAGA_SECRET_PAYMENTS_SWITCH_TOKEN`` (or, in a flow run, from the Prefect Secret block
``payments-switch-token``). Every value resolved in a process is remembered by that process's
`Redactor`, which keeps it out of logs, artifacts, step outputs and error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

SCHEME = "secret://"

SecretSource = Callable[[str], str | None]
"""Looks up a secret by name; None when it has none."""


class SecretNotFound(LookupError):
    """A referenced secret has no value where Siaga looks for it."""


class Redactor:
    """Replaces every secret value it knows by ``[secret:NAME]`` in text and nested data."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        if len(value) >= 4:  # shorter values would redact ordinary words
            self._names[value] = name

    def text(self, text: str) -> str:
        for value in sorted(self._names, key=len, reverse=True):
            if value in text:
                text = text.replace(value, f"[secret:{self._names[value]}]")
        return text

    def __call__(self, value: Any) -> Any:
        if not self._names:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self(v) for v in value)
        return value

    def processor(self, logger: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """A structlog processor redacting every value of the event."""
        return {key: self(value) for key, value in event.items()} if self._names else event


REDACTOR = Redactor()
"""This process's redactor: `resolve_secret` adds every value it returns."""


def env_name(reference: str) -> str:
    """The environment variable that holds ``secret://NAME``."""
    name = reference.removeprefix(SCHEME)
    return "SIAGA_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def is_secret_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def resolve_secret(
    reference: str,
    environ: Mapping[str, str] | None = None,
    *,
    fallback: SecretSource | None = None,
    redactor: Redactor = REDACTOR,
) -> str:
    """The value of ``secret://NAME``: from the environment, else from `fallback`; raise
    SecretNotFound naming where it was looked for."""
    if not is_secret_reference(reference):
        raise SecretNotFound(f"{reference!r} is not a secret reference (secret://NAME)")
    name = reference.removeprefix(SCHEME)
    environ = os.environ if environ is None else environ
    variable = env_name(reference)
    value = environ.get(variable)
    if value is None and fallback is not None:
        value = fallback(name)
    if value is None:
        where = f"the environment variable {variable}" + (" or a Prefect Secret block of that name" if fallback else "")
        raise SecretNotFound(f"secret {reference} is not set: put it in {where}")
    redactor.add(name, value)
    return value


def resolve_secrets(value: Any, **options: Any) -> Any:
    """`value` with every ``secret://NAME`` string inside it replaced by the secret's value."""
    if is_secret_reference(value):
        return resolve_secret(value, **options)
    if isinstance(value, Mapping):
        return {k: resolve_secrets(v, **options) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, **options) for v in value]
    return value
