"""Fakes of the application ports, for unit tests only (no I/O)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from app.application.identity.ports import (
    AccessClaims,
    CachedApiKey,
    CachedUser,
    IssuedAccessToken,
    NewApiKeySecret,
    RevocationState,
    RevocationUnavailable,
)
from app.application.llm.types import StreamItem
from app.application.tools import ToolExecutionRecord, ToolOutput, ToolRunObservation
from app.domain.errors import ServiceUnavailable, Unauthenticated
from app.domain.identity import ApiKey, ApiKeyFilter, RefreshToken, Session
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role, User
from tests.fakes_agent import (
    InMemoryConversationRepository,
    InMemoryMessageRepository,
    InMemoryRunRepository,
    InMemoryToolExecutionRepository,
)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class InMemoryUserRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, User] = {}

    async def add(self, user: User) -> None:
        if any(u.email == user.email for u in self.rows.values()):
            raise ValueError("duplicate email")
        self.rows[user.id] = user

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
        return self.rows.get(user_id)

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        self.rows[user_id].password_hash = password_hash

    async def get_by_email(self, email: str) -> User | None:
        return next((u for u in self.rows.values() if u.email == email), None)

    async def update(self, user: User) -> None:
        self.rows[user.id] = user

    async def count_admins(self) -> int:
        return sum(1 for u in self.rows.values() if u.role is Role.ADMIN)

    async def list_page(self, *, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[User]:
        ordered = sorted(self.rows.values(), key=lambda u: (u.created_at, u.id), reverse=True)
        if after is not None:
            ordered = [u for u in ordered if (u.created_at, u.id) < after]
        return ordered[:limit]


class InMemorySessionRepository:
    def __init__(self) -> None:
        self.sessions: dict[uuid.UUID, Session] = {}
        self.tokens: dict[str, RefreshToken] = {}

    async def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    async def get(self, session_id: uuid.UUID) -> Session | None:
        return self.sessions.get(session_id)

    async def revoke(self, session_id: uuid.UUID, at: datetime, reason: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.revoked_at is None:
            session.revoked_at, session.revoked_reason = at, reason

    async def revoke_all_for_user(self, user_id: uuid.UUID, at: datetime, reason: str) -> list[uuid.UUID]:
        ended = [s.id for s in self.sessions.values() if s.user_id == user_id and s.revoked_at is None]
        for session_id in ended:
            await self.revoke(session_id, at, reason)
        return ended

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self.tokens[token.token_hash] = token

    async def claim_refresh_token(self, token_hash: str, at: datetime) -> RefreshToken | None:
        token = self.tokens.get(token_hash)
        if token is None or token.used_at is not None:
            return None
        token.used_at = at
        return token

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        return self.tokens.get(token_hash)


class InMemoryApiKeyRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, ApiKey] = {}
        self.lookups = 0

    async def add(self, key: ApiKey) -> None:
        self.rows[key.id] = key

    async def get(self, key_id: uuid.UUID) -> ApiKey | None:
        return self.rows.get(key_id)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        self.lookups += 1
        return next((k for k in self.rows.values() if k.prefix == prefix), None)

    async def list_page(self, query: ApiKeyFilter) -> list[ApiKey]:
        keys = sorted(self.rows.values(), key=lambda k: (k.created_at, k.id), reverse=True)
        if query.user_id is not None:
            keys = [k for k in keys if k.user_id == query.user_id]
        if query.after is not None:
            after = query.after
            keys = [k for k in keys if (k.created_at, k.id) < after]
        return keys[: query.limit]

    async def update(self, key: ApiKey) -> None:
        self.rows[key.id] = key

    async def revoke(self, key_id: uuid.UUID, at: datetime) -> None:
        key = self.rows.get(key_id)
        if key is not None and key.revoked_at is None:
            key.revoked_at = at

    async def set_key_hash(self, key_id: uuid.UUID, key_hash: str) -> None:
        if key_id in self.rows:
            self.rows[key_id].key_hash = key_hash

    async def touch_last_used(self, stamps: dict[uuid.UUID, datetime]) -> None:
        for key_id, at in stamps.items():
            if key_id in self.rows:
                self.rows[key_id].last_used_at = at


class FakePasswordHasher:
    """Reversible "hashes" (never use outside tests); counts dummy verifications."""

    def __init__(self) -> None:
        self.dummy_verifications = 0
        self.rehash_to: str | None = None

    async def hash(self, password: str) -> str:
        return f"fake${password}"

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        if password_hash is None:
            self.dummy_verifications += 1
            return False, None
        ok = password_hash == f"fake${password}"
        return ok, (self.rehash_to if ok else None)


class FakeAccessTokens:
    """Tokens are "access:<user>:<session>"."""

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID) -> IssuedAccessToken:
        return IssuedAccessToken(token=f"access:{user_id}:{session_id}", expires_in=900)

    def verify(self, token: str) -> AccessClaims:
        kind, _, rest = token.partition(":")
        user_id, _, session_id = rest.partition(":")
        if kind != "access":
            raise Unauthenticated("bad token", code="invalid_token")
        return AccessClaims(uuid.UUID(user_id), uuid.UUID(session_id), token_id="jti", expires_at=0)


class FakeRefreshTokens:
    def __init__(self) -> None:
        self.issued = 0

    def new(self) -> str:
        self.issued += 1
        return f"refresh-{self.issued}-{uuid.uuid4().hex}"

    def digest(self, token: str) -> str:
        return f"h:{token}"


class FakeApiKeyCodec:
    """Keys are "sk-<prefix>_<secret>!" (the "!" is the checksum); hashes are "h:<key>"."""

    def generate(self) -> NewApiKeySecret:
        prefix = uuid.uuid4().hex[:12]
        key = f"sk-{prefix}_{uuid.uuid4().hex}!"
        return NewApiKeySecret(key=key, prefix=prefix, key_hash=self.digest(key))

    def parse_prefix(self, key: str) -> str:
        if not (key.startswith("sk-") and key.endswith("!") and "_" in key):
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        return key[3:].split("_", 1)[0]

    def digest(self, key: str) -> str:
        return f"h:{key}"

    def matches(self, key: str, stored_hash: str) -> tuple[bool, bool]:
        return stored_hash == self.digest(key), False


class FakeRevocationStore:
    """In-memory revocation state; `down = True` makes reads fail like an unreachable Redis."""

    def __init__(self) -> None:
        self.down = False
        self.reads = 0
        self.sessions: set[uuid.UUID] = set()
        self.keys: set[uuid.UUID] = set()
        self.disabled: set[uuid.UUID] = set()
        self.versions: dict[uuid.UUID, int] = {}

    async def state(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None
    ) -> RevocationState:
        self.reads += 1
        if self.down:
            raise RevocationUnavailable("down")
        return RevocationState(
            session_revoked=session_id in self.sessions,
            api_key_revoked=api_key_id in self.keys,
            user_disabled=user_id in self.disabled,
            user_version=self.versions.get(user_id, 0),
            api_key_version=self.versions.get(api_key_id, 0) if api_key_id else 0,
        )

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None:
        self.sessions.update(session_ids)

    async def revoke_api_key(self, key_id: uuid.UUID) -> None:
        self.keys.add(key_id)
        await self.api_key_changed(key_id)

    async def api_key_changed(self, key_id: uuid.UUID) -> None:
        self.versions[key_id] = self.versions.get(key_id, 0) + 1

    async def user_changed(self, user_id: uuid.UUID, *, disabled: bool) -> None:
        (self.disabled.add if disabled else self.disabled.discard)(user_id)
        self.versions[user_id] = self.versions.get(user_id, 0) + 1


class FakeIdentityCache:
    def __init__(self) -> None:
        self.keys: dict[str, CachedApiKey] = {}
        self.users: dict[uuid.UUID, CachedUser] = {}

    def get_key(self, digest: str) -> CachedApiKey | None:
        return self.keys.get(digest)

    def put_key(self, digest: str, entry: CachedApiKey) -> None:
        self.keys[digest] = entry

    def get_user(self, user_id: uuid.UUID) -> CachedUser | None:
        return self.users.get(user_id)

    def put_user(self, entry: CachedUser) -> None:
        self.users[entry.user.id] = entry


class FakeLoginThrottle:
    def __init__(self, *, limit: int = 5) -> None:
        self.limit = limit
        self.failures: dict[str, int] = {}

    async def retry_after(self, ip: str, account: str) -> float | None:
        return 60.0 if self.failures.get(account, 0) >= self.limit else None

    async def record_failure(self, ip: str, account: str) -> None:
        self.failures[account] = self.failures.get(account, 0) + 1

    async def reset_account(self, account: str) -> None:
        self.failures.pop(account, None)


class FakeLastUsedRecorder:
    def __init__(self) -> None:
        self.recorded: list[tuple[uuid.UUID, datetime]] = []

    def record(self, key_id: uuid.UUID, at: datetime) -> None:
        self.recorded.append((key_id, at))


class FakeUnitOfWork:
    """Commits are counted; rollback of an uncommitted block is recorded, not simulated."""

    def __init__(self) -> None:
        self.users = InMemoryUserRepository()
        self.sessions = InMemorySessionRepository()
        self.api_keys = InMemoryApiKeyRepository()
        # The agent's repositories (fakes in tests/fakes_agent.py).
        self.conversations = InMemoryConversationRepository()
        self.messages = InMemoryMessageRepository()
        self.runs = InMemoryRunRepository()
        self.tool_executions = InMemoryToolExecutionRepository()
        self.commits = 0
        self.rollbacks = 0
        self.unavailable = False  # True: behave like an unreachable database

    async def __aenter__(self) -> Self:
        if self.unavailable:
            raise ServiceUnavailable("The database is unavailable.", code="database_unavailable")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.rollbacks += 1

    async def commit(self) -> None:
        self.commits += 1

    async def rollback(self) -> None:
        self.rollbacks += 1


class FakeProbe:
    """A dependency probe that answers, fails or hangs as told."""

    def __init__(self, name: str, *, required: bool = True, fail: str | None = None, hang: bool = False) -> None:
        self.name = name
        self.required = required
        self.fail = fail
        self.hang = hang

    async def check(self) -> str:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise ConnectionRefusedError(self.fail)
        return "ok"


class FakeTool:
    """A scriptable tool: returns `value`, raises `error`, or blocks until `release` is set."""

    def __init__(
        self,
        name: str = "fake",
        *,
        value: object = "ok",
        error: BaseException | None = None,
        requires_approval: bool = False,
        timeout_seconds: float = 5.0,
        block: bool = False,
        parameters: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.description = f"fake tool {name}"
        self.parameters = parameters or {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 20}},
            "additionalProperties": False,
        }
        self.requires_approval = requires_approval
        self.timeout_seconds = timeout_seconds
        self.value = value
        self.error = error
        self.block = block
        self.release = asyncio.Event()
        self.calls: list[dict[str, object]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def run(self, arguments: Mapping[str, object]) -> ToolOutput:
        self.calls.append(dict(arguments))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # let the other calls of a batch start
            if self.block:
                await self.release.wait()
            if self.error is not None:
                raise self.error
            return ToolOutput(self.value)  # type: ignore[arg-type]
        finally:
            self.in_flight -= 1


class InMemoryToolExecutionRecorder:
    def __init__(self) -> None:
        self.records: list[ToolExecutionRecord] = []

    async def record(self, record: ToolExecutionRecord) -> None:
        self.records.append(record)


class RecordingToolRunObserver:
    """A `ToolRunObserver` that keeps what it is told (`fail=True`: raises, like a broken adapter)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.runs: list[ToolRunObservation] = []
        self.fail = fail

    def observe(self, run: ToolRunObservation) -> None:
        self.runs.append(run)
        if self.fail:
            raise RuntimeError("observer broken")

    def pairs(self) -> list[tuple[str, str]]:
        return [(run.name, run.status.value) for run in self.runs]


# -- gateway -------------------------------------------------------------------------------


class FakeLLMClient:
    """An `LLMClient` that answers from a script; `fail_with` makes it raise before any chunk."""

    def __init__(self, chunks: list[dict[str, Any]] | None = None, fail_with: Exception | None = None) -> None:
        self.chunks = chunks or []
        self.fail_with = fail_with
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(body)
        if self.fail_with is not None:
            raise self.fail_with
        return {"id": "up", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[list[StreamItem]]:
        """One chunk per read (a real upstream may deliver several together)."""
        self.calls.append(body)
        if self.fail_with is not None:
            raise self.fail_with
        try:
            for chunk in self.chunks:
                yield [dict(chunk)]
        finally:
            self.closed = True


class FakeUsageRecorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def record(self, record: Any) -> None:
        self.records.append(record)


def api_key_principal(allowed_tools: tuple[str, ...] | None = None) -> Principal:
    """A user's API key with these tool scopes (None: every tool)."""
    return Principal(
        user_id=uuid.uuid4(),
        email="someone@example.com",
        role=Role.USER,
        credential=CredentialKind.API_KEY,
        api_key_id=uuid.uuid4(),
        allowed_tools=allowed_tools,
    )
