"""The settings a test hands the Siaga code it runs in its own process (a compiled flow, a watcher,
a run starter), the way an entry point would: read from the test session's environment (the data
folder and runbook library tests/conftest.py set), with the test's own files put in their place.
A subprocess (`siaga up`, a worker) is an entry point of its own and reads its environment instead."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from siaga.settings import Settings


def settings_with(**changes: Any) -> Settings:
    """The session's settings with `changes` (``roster=path``, ``connections=path``) in place."""
    return dataclasses.replace(Settings.from_environ(os.environ), **changes)
