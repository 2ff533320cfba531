"""Structured JSON logs with the request id in every line.

structlog renders both its own loggers and the standard library's (uvicorn, SQLAlchemy,
Alembic), so every line has the same shape. The request id lives in a context variable
bound by the request-context middleware, and is merged into every line logged while the
request is handled.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog
from structlog.types import EventDict, Processor

from app.config import LoggingSettings

_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key", "apikey", "pepper", "key_hash")


def _redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Last line of defence: never log a value under a key that names a secret."""
    for key in list(event_dict):
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_KEYS) and key not in ("event", "token_type"):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(settings: LoggingSettings) -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # First: a call below the configured level costs one check, not the whole chain.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": shared,
                }
            },
            "handlers": {
                "default": {"class": "logging.StreamHandler", "formatter": "structured", "stream": sys.stderr}
            },
            "root": {"handlers": ["default"], "level": settings.level.upper()},
            "loggers": {
                # uvicorn's access log duplicates ours (which carries the request id).
                "uvicorn.access": {"level": "WARNING"},
                "uvicorn.error": {"level": settings.level.upper()},
                "sqlalchemy.engine": {"level": "WARNING"},
                "alembic": {"level": "WARNING"},
            },
        }
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
