"""Opaque list cursors: base64url of a small JSON array. A cursor that does not decode is a 400."""

from __future__ import annotations

import base64
import binascii
import json

from app.domain.errors import InvalidInput

MIN_LIMIT, MAX_LIMIT, DEFAULT_LIMIT = 1, 100, 20


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, binascii.Error):
        parts = None
    if not isinstance(parts, list) or len(parts) != size or not all(isinstance(p, str) for p in parts):
        raise InvalidInput("The cursor is not valid.", param="cursor")
    return parts


def check_limit(limit: int) -> int:
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between {MIN_LIMIT} and {MAX_LIMIT}.", param="limit")
    return limit
