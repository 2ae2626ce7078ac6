"""Send the ``siaga`` logger's records to the Prefect run they happen in."""

from __future__ import annotations

import logging
from pathlib import Path

import structlog
from prefect.logging.handlers import APILogHandler

from siaga.logs import configure_logging, formatter


def attach_run_logs(home: Path) -> None:
    """Configure Siaga's logging (its file in the data folder `home`) and add Prefect's API handler
    to it, once per process."""
    configure_logging(home)
    logger = logging.getLogger("siaga")
    if any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        return
    handler = APILogHandler()
    handler.setFormatter(formatter(structlog.dev.ConsoleRenderer(colors=False), drop=("timestamp", "level")))
    logger.addHandler(handler)
