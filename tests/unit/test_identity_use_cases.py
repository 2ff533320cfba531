"""Identity use cases with fakes: the rules, not the adapters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from app.application.identity.api_keys import ApiKeySpec, IssueApiKey, RevokeApiKey, UpdateApiKey
from app.application.identity.auth import Authenticator, Login, RefreshSession, RegisterUser, SessionStarter
from app.application.identity.users import UpdateUser
from app.application.ports import UnitOfWork
from app.domain.errors import Forbidden, InvalidInput, NotFound, RateLimited, ServiceUnavailable, Unauthenticated
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role
from tests.fakes import (
    FakeAccessTokens,
    FakeApiKeyCodec,
    FakeClock,
    FakeIdentityCache,
    FakeLastUsedRecorder,
    FakeLoginThrottle,
    FakePasswordHasher,
    FakeRefreshTokens,
    FakeRevocationStore,
    FakeUnitOfWork,
)


class World:
    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        self.clock = FakeClock()
        self.hasher = FakePasswordHasher()
        self.revocation = FakeRevocationStore()
        self.cache = FakeIdentityCache()
        self.codec = FakeApiKeyCodec()
        self.last_used = FakeLastUsedRecorder()
        self.throttle = FakeLoginThrottle(limit=3)
        self.starter = SessionStarter(FakeAccessTokens(), FakeRefreshTokens(), self.clock, refresh_ttl_seconds=3600)
        self.register = RegisterUser(self.factory, self.hasher, self.clock, allow_registration=True)
        self.login = Login(self.factory, self.hasher, self.starter, self.throttle)
        self.refresh = RefreshSession(self.factory, self.starter, self.revocation)
        self.auth = Authenticator(
            self.factory, FakeAccessTokens(), self.codec, self.revocation, self.cache, self.last_used, self.clock
        )
        self.issue = IssueApiKey(self.factory, self.codec, self.clock)

    def factory(self) -> UnitOfWork:
        return self.uow  # type: ignore[return-value] # the fake's repositories are concrete (tests inspect them)

    async def admin(self) -> Principal:
        user = await self.register("admin@example.com", "password123")
        user.role = Role.ADMIN
        return Principal(user_id=user.id, email=user.email, role=Role.ADMIN, credential=CredentialKind.JWT)


@pytest.fixture
def world() -> World:
    return World()


async def test_unknown_email_is_verified_against_a_dummy_hash(world: World) -> None:
    await world.register("a@example.com", "password123")
    with pytest.raises(Unauthenticated) as wrong_password:
        await world.login("a@example.com", "nope-nope", "1.2.3.4")
    with pytest.raises(Unauthenticated) as unknown:
        await world.login("b@example.com", "nope-nope", "1.2.3.4")
    assert world.hasher.dummy_verifications == 1
    assert (wrong_password.value.code, wrong_password.value.message) == (unknown.value.code, unknown.value.message)


async def test_login_rehashes_when_parameters_changed_and_throttles(world: World) -> None:
    await world.register("a@example.com", "password123")
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await world.login("a@example.com", "wrong-password", "1.2.3.4")
    with pytest.raises(RateLimited):
        await world.login("a@example.com", "password123", "1.2.3.4")

    other = await world.register("c@example.com", "password123")
    world.hasher.rehash_to = "fake$rehashed"  # the hasher's parameters changed since the last login
    await world.login("c@example.com", "password123", "1.2.3.4")
    assert world.uow.users.rows[other.id].password_hash == "fake$rehashed"


async def test_register_never_makes_an_admin_and_can_be_closed(world: World) -> None:
    user = await world.register(" New@Example.com ", "password123", "  ")
    assert (user.email, user.role, user.name) == ("new@example.com", Role.USER, None)
    closed = RegisterUser(world.factory, world.hasher, world.clock, allow_registration=False)
    with pytest.raises(Forbidden):
        await closed("x@example.com", "password123")


async def test_refresh_reuse_revokes_and_publishes_the_session(world: World) -> None:
    await world.register("a@example.com", "password123")
    pair = await world.login("a@example.com", "password123", "ip")
    newer = await world.refresh(pair.refresh_token)
    with pytest.raises(Unauthenticated) as reuse:
        await world.refresh(pair.refresh_token)
    assert reuse.value.code == "token_revoked"
    session_id = next(iter(world.uow.sessions.sessions))
    assert world.uow.sessions.sessions[session_id].revoked_reason == "refresh_token_reuse"
    assert session_id in world.revocation.sessions
    with pytest.raises(Unauthenticated):
        await world.refresh(newer.refresh_token)


async def test_expired_refresh_token_is_refused(world: World) -> None:
    await world.register("a@example.com", "password123")
    pair = await world.login("a@example.com", "password123", "ip")
    world.clock.advance(3601)
    with pytest.raises(Unauthenticated) as expired:
        await world.refresh(pair.refresh_token)
    assert expired.value.code == "token_expired"


async def test_malformed_key_costs_no_lookup(world: World) -> None:
    with pytest.raises(Unauthenticated):
        await world.auth.api_key("sk-not-a-valid-key")
    assert world.uow.api_keys.lookups == 0
    assert world.revocation.reads == 0


async def test_cached_key_survives_a_database_outage_uncached_gets_503(world: World) -> None:
    admin = await world.admin()
    _, cached = await world.issue(admin, ApiKeySpec(name="a"))
    _, uncached = await world.issue(admin, ApiKeySpec(name="b"))
    await world.auth.api_key(cached)
    world.uow.unavailable = True
    principal = await world.auth.api_key(cached)
    assert principal.role is Role.ADMIN
    with pytest.raises(ServiceUnavailable):
        await world.auth.api_key(uncached)


async def test_without_redis_the_database_decides(world: World) -> None:
    admin = await world.admin()
    key, secret = await world.issue(admin, ApiKeySpec(name="a"))
    await world.auth.api_key(secret)
    world.revocation.down = True
    await RevokeApiKey(world.factory, world.revocation, world.clock)(admin, key.id)
    world.revocation.keys.clear()  # the publication was lost with Redis
    with pytest.raises(Unauthenticated):
        await world.auth.api_key(secret)  # the cache is not trusted: the database says revoked


async def test_a_changed_version_reloads_the_cached_key(world: World) -> None:
    admin = await world.admin()
    key, secret = await world.issue(admin, ApiKeySpec(name="a", allowed_models=["x"]))
    assert (await world.auth.api_key(secret)).allowed_models == ("x",)
    await UpdateApiKey(world.factory, world.revocation, world.clock)(admin, key.id, {"allowed_models": None})
    assert (await world.auth.api_key(secret)).allowed_models is None
    assert world.last_used.recorded[-1][0] == key.id


async def test_api_key_admin_rules(world: World) -> None:
    admin = await world.admin()
    user = await world.register("u@example.com", "password123")
    as_user = Principal(user_id=user.id, email=user.email, role=Role.USER, credential=CredentialKind.API_KEY)
    with pytest.raises(Forbidden):
        await world.issue(as_user, ApiKeySpec(name="mine"))
    with pytest.raises(NotFound):
        await world.issue(admin, ApiKeySpec(name="x", user_id=uuid.uuid4()))
    with pytest.raises(InvalidInput):
        await world.issue(admin, ApiKeySpec(name="x", expires_at=world.clock.now() - timedelta(seconds=1)))
    with pytest.raises(InvalidInput):
        await world.issue(admin, ApiKeySpec(name="x", rpm_limit=0))
    key, _ = await world.issue(admin, ApiKeySpec(name="x", allowed_tools=["a", "a", " b "]))
    assert key.allowed_tools == ("a", "b")
    update = UpdateApiKey(world.factory, world.revocation, world.clock)
    with pytest.raises(InvalidInput):
        await update(admin, key.id, {"user_id": user.id})
    with pytest.raises(NotFound):
        await RevokeApiKey(world.factory, world.revocation, world.clock)(as_user, key.id)


async def test_deactivation_ends_sessions_and_publishes(world: World) -> None:
    admin = await world.admin()
    user = await world.register("u@example.com", "password123")
    await world.login("u@example.com", "password123", "ip")
    updated = await UpdateUser(world.factory, world.revocation, world.clock)(admin, user.id, is_active=False)
    assert updated.is_active is False
    assert user.id in world.revocation.disabled
    assert len(world.revocation.sessions) == 1
    with pytest.raises(InvalidInput):
        await UpdateUser(world.factory, world.revocation, world.clock)(admin, admin.user_id, role=Role.USER)


async def test_a_burst_with_a_cold_cache_loads_the_key_once(world: World) -> None:
    admin = await world.admin()
    _, secret = await world.issue(admin, ApiKeySpec(name="a"))
    repository = world.uow.api_keys
    lookup = repository.get_by_prefix

    async def slow_lookup(prefix: str) -> Any:
        await asyncio.sleep(0.01)  # the database takes a while: every request of the burst arrives meanwhile
        return await lookup(prefix)

    repository.get_by_prefix = slow_lookup  # type: ignore[method-assign]
    before = repository.lookups
    principals = await asyncio.gather(*(world.auth.api_key(secret) for _ in range(50)))
    assert repository.lookups - before == 1
    assert {p.user_id for p in principals} == {admin.user_id}
    with pytest.raises(Unauthenticated):  # a wrong key is still refused, on its own load
        await world.auth.api_key(secret[:-4] + "zzzz")


async def test_a_burst_of_tokens_with_a_cold_cache_loads_the_user_once(world: World) -> None:
    await world.register("a@example.com", "password123")
    pair = await world.login("a@example.com", "password123", "1.2.3.4")
    users = world.uow.users
    get = users.get
    loads = 0

    async def slow_get(user_id: uuid.UUID) -> Any:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return await get(user_id)

    users.get = slow_get  # type: ignore[method-assign, assignment]
    principals = await asyncio.gather(*(world.auth.access_token(pair.access_token) for _ in range(50)))
    assert loads == 1
    assert len({p.user_id for p in principals}) == 1
