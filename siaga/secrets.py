"""Secrets are referenced in runbooks and configuration as ``secret://NAME``, never written there.

``secret://payments-switch-token`` is read from the environment variable
``SIAGA_SECRET_PAYMENTS_SWITCH_TOKEN``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SCHEME = "secret://"


class SecretNotFound(LookupError):
    """A referenced secret has no value where Siaga looks for it."""


def env_name(reference: str) -> str:
    """The environment variable that holds ``secret://NAME``."""
    name = reference.removeprefix(SCHEME)
    return "SIAGA_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def is_secret_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def resolve_secret(reference: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of ``secret://NAME``; raise SecretNotFound naming where it was looked for."""
    if not is_secret_reference(reference):
        raise SecretNotFound(f"{reference!r} is not a secret reference (secret://NAME)")
    environ = os.environ if environ is None else environ
    variable = env_name(reference)
    try:
        return environ[variable]
    except KeyError:
        raise SecretNotFound(
            f"secret {reference} is not set: export {variable} in the environment of the runner"
        ) from None
