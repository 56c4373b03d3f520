"""structlog set-up: JSON lines for machines, a console renderer when a human watches a terminal.

Per-request values (request id, tenant) live in structlog's contextvars, bound by the chassis at the
start of each request, so every event logged while handling it carries them.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, service: str, log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog once per process (``run_service`` does it): ``json`` lines, a
    ``console`` renderer, or ``auto`` (console when stderr is a terminal); events below ``level``
    are dropped. Every event carries ``service`` and the request context the chassis binds."""
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # hypercorn and libraries log through the stdlib: keep their warnings, in the same stream.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"{service} %(name)s %(levelname)s %(message)s"
    )
