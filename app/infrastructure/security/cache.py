"""The in-process identity cache: bounded, short-lived, per process."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from app.application.identity.ports import CachedApiKey, CachedUser

V = TypeVar("V")


class _TtlLru(Generic[V]):
    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self._ttl <= 0:
            return
        self._items[key] = (self._clock() + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class InProcessIdentityCache:
    """Authenticated keys by their keyed hash (never the key itself) and users by id.

    Entries are trusted only while the shared revocation versions match (see `Authenticator`);
    the TTL bounds how long a copy lives at all, e.g. while Redis is unreachable.
    """

    def __init__(self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys: _TtlLru[CachedApiKey] = _TtlLru(ttl_seconds, max_entries, clock)
        self._users: _TtlLru[CachedUser] = _TtlLru(ttl_seconds, max_entries, clock)

    def get_key(self, digest: str) -> CachedApiKey | None:
        return self._keys.get(digest)

    def put_key(self, digest: str, entry: CachedApiKey) -> None:
        self._keys.put(digest, entry)

    def get_user(self, user_id: uuid.UUID) -> CachedUser | None:
        return self._users.get(user_id)

    def put_user(self, entry: CachedUser) -> None:
        self._users.put(entry.user.id, entry)
