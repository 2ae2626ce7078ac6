"""Imported by the fast lane's forkserver (`siaga.flows.faststart`): compiles every runbook of
``$SIAGA_RUNBOOKS`` once, so each run forked from it starts with its flow compiled, and builds the
providers' certificate check once (~35 ms a run otherwise)."""

from __future__ import annotations

import contextlib
import os

from siaga.integrations import warm_tls
from siaga.settings import Settings

from .library import warm

warm_tls()
with contextlib.suppress(Exception):  # the forkserver must start even when the folder is broken
    warm(Settings.from_environ(os.environ))  # the forkserver's own settings: it is an entry point
