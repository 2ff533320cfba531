"""Revocation state shared by every instance: Redis in production, a dict for a single process."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.application.identity.ports import RevocationState, RevocationUnavailable
from app.application.single_flight import SingleFlight
from app.domain.errors import ServiceUnavailable
from app.infrastructure.redis_pipeline import HotPathRedis, RedisPyHotPath

# A revoked key / disabled user marker must outlive every cached copy made before it was set
# (the in-process cache TTL is at most an hour); after that the database answers the same.
MARKER_TTL_SECONDS = 24 * 3600
VERSION_TTL_SECONDS = 7 * 24 * 3600


Command = tuple[str, tuple[object, ...], dict[str, object]]


def _int(value: bytes | str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


class RedisRevocationStore:
    """One MGET per authenticated request (at most one per `cache_seconds` for the same
    credential), through ``reads`` (production: the pipelined hot-path client; without it,
    redis-py); writes are small redis-py pipelines.

    Keys (under the deployment's prefix): ``rev:s:<session>`` (ended session, kept as long as
    its access tokens could live), ``rev:k:<key>`` (revoked key), ``dis:u:<user>`` (disabled
    user), ``ver:k:<key>`` / ``ver:u:<user>`` (bumped on every other change so instances drop
    their cached copies). A failed read raises `RevocationUnavailable` (the caller falls back
    to the database); a failed write raises 503 `redis_unavailable` and is also kept (bounded)
    to be re-published by this process as soon as Redis answers again, so a revocation made
    during an outage is not forgotten when Redis comes back.
    """

    MAX_PENDING = 10_000
    MAX_CACHED_STATES = 10_000

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        session_marker_ttl_seconds: int,
        cache_seconds: float = 0.0,
        reads: HotPathRedis | None = None,
    ) -> None:
        self._redis = redis
        self._reads = reads if reads is not None else RedisPyHotPath(redis)
        self._p = key_prefix
        self._session_ttl = session_marker_ttl_seconds
        self._pending: list[Command] = []
        # A state read is reused for `cache_seconds` (well under the 1 s within which a revocation
        # must reach every instance): under load that saves a Redis round trip on most requests.
        # This process's own writes drop every reused state at once.
        self._cache_seconds = cache_seconds
        self._states: dict[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None], tuple[float, RevocationState]] = {}
        self._generation = 0
        self._flights: SingleFlight[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None], RevocationState] = (
            SingleFlight()
        )

    async def _publish_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            await self._execute(pending)
        except (RedisError, OSError):
            self._pending = pending + self._pending
            raise

    async def _execute(self, commands: list[Command]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, args, kwargs in commands:
                getattr(pipe, name)(*args, **kwargs)
            await pipe.execute()

    async def state(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None
    ) -> RevocationState:
        if self._cache_seconds <= 0:
            return await self._read(user_id, session_id, api_key_id)
        ids = (user_id, session_id, api_key_id)
        now = time.monotonic()
        cached = self._states.get(ids)
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        # One read per credential at a time: a burst of requests arriving when the reused answer
        # has just expired waits for one read instead of sending one each (150 at once, measured).
        state = await self._flights.run(ids, lambda: self._read(user_id, session_id, api_key_id))
        if generation == self._generation:  # no write of ours since the read began
            if len(self._states) >= self.MAX_CACHED_STATES:
                self._states.clear()
            self._states[ids] = (now + self._cache_seconds, state)
        return state

    async def _read(
        self, user_id: uuid.UUID, session_id: uuid.UUID | None, api_key_id: uuid.UUID | None
    ) -> RevocationState:
        keys = [f"{self._p}dis:u:{user_id}", f"{self._p}ver:u:{user_id}"]
        if session_id is not None:
            keys.append(f"{self._p}rev:s:{session_id}")
        if api_key_id is not None:
            keys += [f"{self._p}rev:k:{api_key_id}", f"{self._p}ver:k:{api_key_id}"]
        try:
            await self._publish_pending()
            values = await self._reads.mget(keys)
        except (RedisError, OSError) as exc:
            raise RevocationUnavailable(type(exc).__name__) from exc
        state = RevocationState(user_disabled=values[0] is not None, user_version=_int(values[1]))
        rest = values[2:]
        session_revoked = False
        if session_id is not None:
            session_revoked, rest = rest[0] is not None, rest[1:]
        if api_key_id is not None:
            return RevocationState(
                user_disabled=state.user_disabled,
                user_version=state.user_version,
                session_revoked=session_revoked,
                api_key_revoked=rest[0] is not None,
                api_key_version=_int(rest[1]),
            )
        return RevocationState(
            user_disabled=state.user_disabled, user_version=state.user_version, session_revoked=session_revoked
        )

    async def _write(self, commands: list[Command]) -> None:
        # Reused and in-flight reads may predate this write: none of them is used again.
        self._generation += 1
        self._states.clear()
        self._flights.forget()
        try:
            await self._publish_pending()
            await self._execute(commands)
        except (RedisError, OSError) as exc:
            self._pending = (self._pending + commands)[-self.MAX_PENDING :]
            raise ServiceUnavailable(
                "The change is saved but could not be published to every instance; retry shortly.",
                code="redis_unavailable",
            ) from exc

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None:
        await self._write([("set", (f"{self._p}rev:s:{sid}", 1), {"ex": self._session_ttl}) for sid in session_ids])

    async def revoke_api_key(self, key_id: uuid.UUID) -> None:
        await self._write(
            [
                ("set", (f"{self._p}rev:k:{key_id}", 1), {"ex": MARKER_TTL_SECONDS}),
                ("incr", (f"{self._p}ver:k:{key_id}",), {}),
                ("expire", (f"{self._p}ver:k:{key_id}", VERSION_TTL_SECONDS), {}),
            ]
        )

    async def api_key_changed(self, key_id: uuid.UUID) -> None:
        await self._write(
            [
                ("incr", (f"{self._p}ver:k:{key_id}",), {}),
                ("expire", (f"{self._p}ver:k:{key_id}", VERSION_TTL_SECONDS), {}),
            ]
        )

    async def user_changed(self, user_id: uuid.UUID, *, disabled: bool) -> None:
        marker = f"{self._p}dis:u:{user_id}"
        commands: list[Command] = [
            ("set", (marker, 1), {"ex": MARKER_TTL_SECONDS}) if disabled else ("delete", (marker,), {}),
            ("incr", (f"{self._p}ver:u:{user_id}",), {}),
            ("expire", (f"{self._p}ver:u:{user_id}", VERSION_TTL_SECONDS), {}),
        ]
        await self._write(commands)


class InProcessRevocationStore:
    """The same semantics in one process's memory (no REDIS_URL: a single process only)."""

    def __init__(self, *, session_marker_ttl_seconds: int) -> None:
        self._session_ttl = session_marker_ttl_seconds
        self._sessions: dict[uuid.UUID, float] = {}
        self._revoked_keys: set[uuid.UUID] = set()
        self._disabled_users: set[uuid.UUID] = set()
        self._versions: dict[uuid.UUID, int] = {}

    async def state(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None
    ) -> RevocationState:
        now = time.monotonic()
        session_revoked = session_id is not None and self._sessions.get(session_id, 0.0) > now
        return RevocationState(
            session_revoked=session_revoked,
            api_key_revoked=api_key_id in self._revoked_keys,
            user_disabled=user_id in self._disabled_users,
            user_version=self._versions.get(user_id, 0),
            api_key_version=self._versions.get(api_key_id, 0) if api_key_id else 0,
        )

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None:
        now = time.monotonic()
        self._sessions = {sid: until for sid, until in self._sessions.items() if until > now}
        for sid in session_ids:
            self._sessions[sid] = now + self._session_ttl

    async def revoke_api_key(self, key_id: uuid.UUID) -> None:
        self._revoked_keys.add(key_id)
        await self.api_key_changed(key_id)

    async def api_key_changed(self, key_id: uuid.UUID) -> None:
        self._versions[key_id] = self._versions.get(key_id, 0) + 1

    async def user_changed(self, user_id: uuid.UUID, *, disabled: bool) -> None:
        if disabled:
            self._disabled_users.add(user_id)
        else:
            self._disabled_users.discard(user_id)
        self._versions[user_id] = self._versions.get(user_id, 0) + 1
