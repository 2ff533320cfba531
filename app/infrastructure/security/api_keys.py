"""The API key format, its checksum, and its keyed hash.

Format: ``sk-`` + 12-character public prefix + ``_`` + 32-character secret + 6-character
checksum, all base62. The secret carries ~190 bits; the prefix (~71 bits) is public (shown
in listings, used for lookup). The checksum is CRC32 of everything before it, so a
truncated, mistyped or made-up key is refused by arithmetic alone, with no database or Redis
lookup. Keys are stored as HMAC-SHA256(pepper, key); the pepper lives only in the
environment, so a stolen database does not yield usable keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Sequence

from app.application.identity.ports import NewApiKeySecret
from app.domain.errors import Unauthenticated

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIX_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
_KEY_PATTERN = re.compile(
    rf"^sk-([0-9A-Za-z]{{{PREFIX_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


class HmacApiKeyCodec:
    """Generates, checks and hashes API keys; `previous_peppers` keep old hashes working."""

    def __init__(self, pepper: str, previous_peppers: Sequence[str] = ()) -> None:
        self._pepper = pepper.encode()
        self._previous = [p.encode() for p in previous_peppers]

    def generate(self) -> NewApiKeySecret:
        prefix = _random_base62(PREFIX_LENGTH)
        body = f"sk-{prefix}_{_random_base62(SECRET_LENGTH)}"
        key = body + checksum(body)
        return NewApiKeySecret(key=key, prefix=prefix, key_hash=self.digest(key))

    def parse_prefix(self, key: str) -> str:
        match = _KEY_PATTERN.match(key)
        if match is None or not hmac.compare_digest(checksum(key[:-CHECKSUM_LENGTH]), match.group(3)):
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        return match.group(1)

    def _hash(self, pepper: bytes, key: str) -> str:
        return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()

    def digest(self, key: str) -> str:
        return self._hash(self._pepper, key)

    def matches(self, key: str, stored_hash: str) -> tuple[bool, bool]:
        if hmac.compare_digest(self.digest(key), stored_hash):
            return True, False
        for pepper in self._previous:
            if hmac.compare_digest(self._hash(pepper, key), stored_hash):
                return True, True
        return False, False
