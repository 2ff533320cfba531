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

import msgspec
import structlog
from structlog.types import EventDict, Processor

from app.config import LoggingSettings

_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key", "apikey", "pepper", "key_hash")
# Whether a key names a secret, decided once per key: log lines reuse a few dozen keys, and this
# check ran for every key of every line (a fifth of an access line's cost before).
_NAMES_A_SECRET: dict[str, bool] = {}
_MAX_REMEMBERED_KEYS = 4096


def _names_a_secret(key: str) -> bool:
    known = _NAMES_A_SECRET.get(key)
    if known is None:
        lowered = key.lower()
        known = any(marker in lowered for marker in _SECRET_KEYS) and key not in ("event", "token_type")
        if len(_NAMES_A_SECRET) < _MAX_REMEMBERED_KEYS:
            _NAMES_A_SECRET[key] = known
    return known


def _redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Last line of defence: never log a value under a key that names a secret."""
    for key in event_dict:
        if _names_a_secret(key):
            event_dict[key] = "[redacted]"
    return event_dict


_encode_json = msgspec.json.Encoder(enc_hook=repr).encode


def _json_dumps(event_dict: EventDict, **_: Any) -> str:
    """structlog's JSON serializer: msgspec (a tenth of `json.dumps`' cost); anything it cannot
    encode is logged as its ``repr``."""
    return _encode_json(event_dict).decode()


def configure_logging(settings: LoggingSettings) -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    # What the standard library would compute for every record and no line of ours prints:
    # the caller's frame (a stack walk per line), thread and process names (logging docs,
    # "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
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
