"""Logging, configured once per process: JSON lines to a file under the data folder and human
lines on the terminal, both through the standard library so other handlers (Prefect's run logs)
can join the ``siaga`` logger."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog

from .home import ensure_home
from .secrets import REDACTOR

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    REDACTOR.processor,
]
_configured: Path | None = None


def log_file(home: Path) -> Path:
    return home / "logs" / "siaga.jsonl"


def configure_logging(home: Path, *, console: bool = True, level: int = logging.INFO) -> None:
    """Send the ``siaga`` logger's records to ``<home>/logs/siaga.jsonl`` and, if `console`, to
    stderr. Calling it again with the same home changes nothing."""
    global _configured
    if _configured == home:
        return
    _configured = home
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logger = logging.getLogger("siaga")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_siaga", False):
            logger.removeHandler(handler)
    path = log_file(ensure_home(home))
    path.parent.mkdir(exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(formatter(structlog.processors.JSONRenderer()))
    handlers: list[logging.Handler] = [to_file]
    if console:
        to_console = logging.StreamHandler(sys.stderr)
        to_console.setFormatter(formatter(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())))
        handlers.append(to_console)
    for handler in handlers:
        handler._siaga = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def formatter(renderer: structlog.typing.Processor, *, drop: tuple[str, ...] = ()) -> logging.Formatter:
    """A stdlib formatter rendering structlog events (and plain records) with `renderer`,
    leaving out the keys in `drop` (a handler that stamps its own time drops ``timestamp``)."""

    def without(logger: object, name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        for key in drop:
            event.pop(key, None)
        return event

    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, without, renderer],
        foreign_pre_chain=_SHARED,
    )


def get_logger(name: str = "siaga") -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
