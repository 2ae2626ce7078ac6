"""Imported by the fast lane's forkserver (`siaga.flows.faststart`): compiles every runbook of
``$SIAGA_RUNBOOKS`` once, so each run forked from it starts with its flow compiled."""

from __future__ import annotations

import contextlib

from .library import warm

with contextlib.suppress(Exception):  # the forkserver must start even when the folder is broken
    warm()
