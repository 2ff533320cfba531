"""The security adapters' own logic, with injected clocks (no I/O)."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
from passlib.context import CryptContext

from app.application.identity.ports import CachedUser
from app.domain.errors import Unauthenticated
from app.domain.identity import UserSnapshot
from app.domain.users import Role
from app.infrastructure.security.api_keys import ALPHABET, HmacApiKeyCodec
from app.infrastructure.security.cache import InProcessIdentityCache
from app.infrastructure.security.passwords import Argon2PasswordHasher
from app.infrastructure.security.throttle import InProcessLoginThrottle
from app.infrastructure.security.tokens import JwtAccessTokens, key_id


class Clock:
    # Starts at the real time: PyJWT checks exp/nbf against the real clock.
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_key_format_checksum_catches_every_single_character_mistake() -> None:
    codec = HmacApiKeyCodec("pepper-" + secrets.token_hex(16))
    generated = codec.generate()
    assert codec.parse_prefix(generated.key) == generated.prefix
    assert len(generated.key) == 3 + 12 + 1 + 32 + 6
    for position in range(3, len(generated.key)):
        original = generated.key[position]
        if original == "_":
            continue
        replacement = ALPHABET[(ALPHABET.index(original) + 1) % len(ALPHABET)]
        typo = generated.key[:position] + replacement + generated.key[position + 1 :]
        with pytest.raises(Unauthenticated):
            codec.parse_prefix(typo)


def test_keys_are_stored_as_a_peppered_hash_and_old_peppers_still_match() -> None:
    old = HmacApiKeyCodec("old-pepper-" + secrets.token_hex(16))
    key = old.generate()
    assert key.key not in key.key_hash
    rotated = HmacApiKeyCodec("new-pepper-" + secrets.token_hex(16), ["unrelated", "old-pepper-x"])
    assert rotated.matches(key.key, key.key_hash) == (False, False)
    rotated = HmacApiKeyCodec("new-pepper", [old._pepper.decode()])
    assert rotated.matches(key.key, key.key_hash) == (True, True)
    assert rotated.matches(key.key, rotated.digest(key.key)) == (True, False)


def _tokens(clock: Clock, secret: str, previous: list[str] | None = None, retire_at: float = 0) -> JwtAccessTokens:
    return JwtAccessTokens(
        secret=secret,
        previous_secrets=previous or [],
        previous_retire_at=retire_at,
        issuer="iss",
        audience="aud",
        ttl_seconds=900,
        leeway_seconds=10,
        now=clock,
    )


def test_access_token_round_trip() -> None:
    clock = Clock()
    tokens = _tokens(clock, secrets.token_urlsafe(32))
    user, session = uuid.uuid4(), uuid.uuid4()
    issued = tokens.issue(user, session)
    claims = tokens.verify(issued.token)
    assert (claims.user_id, claims.session_id) == (user, session)
    assert claims.expires_at == int(clock.now) + 900


def test_previous_signing_key_retires_at_the_end_of_the_overlap() -> None:
    clock = Clock()
    old_secret, new_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    old_token = _tokens(clock, old_secret).issue(uuid.uuid4(), uuid.uuid4()).token
    rotated = _tokens(clock, new_secret, [old_secret], retire_at=clock.now + 60)
    rotated.verify(old_token)
    clock.now += 61
    with pytest.raises(Unauthenticated):
        rotated.verify(old_token)
    assert old_secret not in key_id(old_secret)


def test_identity_cache_expires_entries() -> None:
    clock = Clock()
    cache = InProcessIdentityCache(ttl_seconds=30, max_entries=2, clock=clock)
    user = UserSnapshot(id=uuid.uuid4(), email="a@example.com", role=Role.USER, is_active=True)
    cache.put_user(CachedUser(user, 0))
    assert cache.get_user(user.id) is not None
    clock.now += 31
    assert cache.get_user(user.id) is None


async def test_in_process_throttle_blocks_then_forgives() -> None:
    clock = Clock()
    throttle = InProcessLoginThrottle(max_per_account=2, max_per_ip=10, window_seconds=900, clock=clock)
    for _ in range(2):
        assert await throttle.retry_after("ip", "a@example.com") is None
        await throttle.record_failure("ip", "a@example.com")
    wait = await throttle.retry_after("ip", "a@example.com")
    assert wait is not None
    assert 0 < wait <= 900
    assert await throttle.retry_after("ip", "b@example.com") is None
    clock.now += 901
    assert await throttle.retry_after("ip", "a@example.com") is None


async def test_password_hasher_rehashes_when_parameters_change() -> None:
    weak = Argon2PasswordHasher(memory_kib=64, time_cost=1, parallelism=1)
    stronger = Argon2PasswordHasher(memory_kib=128, time_cost=1, parallelism=1)
    stored = await weak.hash("password123")
    assert stored.startswith("$argon2id$")
    assert await weak.verify("password123", stored) == (True, None)
    ok, new_hash = await stronger.verify("password123", stored)
    assert ok
    assert new_hash is not None
    assert "m=128" in new_hash
    assert await stronger.verify("wrong", stored) == (False, None)
    assert await stronger.verify("password123", None) == (False, None)
    assert await stronger.verify("password123", "not-a-hash") == (False, None)
    assert CryptContext(schemes=["argon2"]).identify(stored) == "argon2"


async def test_last_used_writer_dedupes_bounds_and_flushes_on_stop() -> None:
    from datetime import UTC, datetime

    from app.application.ports import UnitOfWork
    from app.domain.identity import ApiKey
    from app.infrastructure.security.last_used import BackgroundLastUsedWriter
    from tests.fakes import FakeUnitOfWork

    uow = FakeUnitOfWork()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    keys = [
        ApiKey(
            id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            name="k",
            prefix=f"p{i}",
            key_hash="h",
            created_at=now,
            updated_at=now,
        )
        for i in range(3)
    ]
    for key in keys:
        await uow.api_keys.add(key)

    def factory() -> UnitOfWork:
        return uow  # type: ignore[return-value] # the fake's repositories are concrete

    clock = Clock()
    dropped: list[int] = []
    writer = BackgroundLastUsedWriter(
        factory, interval_seconds=60, queue_size=2, on_drop=lambda: dropped.append(1), clock=clock
    )
    writer.record(keys[0].id, now)  # not started: ignored, never raises
    await writer.start()
    writer.record(keys[0].id, now)
    writer.record(keys[0].id, now)  # within the interval: not queued again
    writer.record(keys[1].id, now)
    writer.record(keys[2].id, now)  # the queue holds 2: dropped and counted
    assert dropped == [1]
    await writer.stop()
    assert keys[0].last_used_at == now
    assert keys[1].last_used_at == now
    assert keys[2].last_used_at is None
