"""Sign-up, sign-in, session refresh and logout, and turning a credential into a principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from app.application.identity.ports import (
    AccessTokens,
    ApiKeyCodec,
    CachedApiKey,
    CachedUser,
    IdentityCache,
    LastUsedRecorder,
    LoginThrottle,
    PasswordHasher,
    RefreshTokens,
    RevocationState,
    RevocationStore,
    RevocationUnavailable,
)
from app.application.ports import Clock, UnitOfWorkFactory
from app.application.single_flight import SingleFlight
from app.domain.errors import Forbidden, InvalidInput, NotFound, RateLimited, Unauthenticated
from app.domain.identity import (
    ApiKey,
    RefreshToken,
    Session,
    UserSnapshot,
    principal_for_api_key,
    principal_for_session,
)
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role, User, check_password_policy, normalise_email

MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


def clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"name must be at most {MAX_NAME_LENGTH} characters.", param="name")
    return name or None


class RegisterUser:
    """Open self-registration. The role is always `user`: nothing in the request can make an admin."""

    def __init__(
        self, uow: UnitOfWorkFactory, hasher: PasswordHasher, clock: Clock, *, allow_registration: bool
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._clock = clock
        self._allowed = allow_registration

    async def __call__(self, email: str, password: str, name: str | None = None) -> User:
        if not self._allowed:
            raise Forbidden("Self-registration is disabled on this server.", code="registration_disabled")
        return await create_user(self._uow, self._hasher, self._clock, email, password, name, Role.USER)


async def create_user(  # noqa: PLR0917 - an internal helper of two use cases
    uow_factory: UnitOfWorkFactory,
    hasher: PasswordHasher,
    clock: Clock,
    email: str,
    password: str,
    name: str | None,
    role: Role,
) -> User:
    email = normalise_email(email)
    check_password_policy(password)
    name = clean_name(name)
    password_hash = await hasher.hash(password)
    now = clock.now()
    user = User(
        id=uuid.uuid4(),
        email=email,
        name=name,
        role=role,
        is_active=True,
        password_hash=password_hash,
        created_at=now,
        updated_at=now,
    )
    async with uow_factory() as uow:
        await uow.users.add(user)  # a duplicate email raises Conflict("email_taken")
        await uow.commit()
    return user


class EnsureAdmin:
    """Create an admin (CLI `create-admin`, BOOTSTRAP_ADMIN_*).

    With ``update_existing`` (the CLI) an existing account is promoted, re-activated and
    given the new password; without it (start-up bootstrap) an existing account is left alone.
    Returns (user, created).
    """

    def __init__(self, uow: UnitOfWorkFactory, hasher: PasswordHasher, clock: Clock) -> None:
        self._uow = uow
        self._hasher = hasher
        self._clock = clock

    async def __call__(
        self, email: str, password: str, *, update_existing: bool, name: str | None = None
    ) -> tuple[User, bool]:
        email = normalise_email(email)
        check_password_policy(password)
        async with self._uow() as uow:
            existing = await uow.users.get_by_email(email)
        if existing is None:
            user = await create_user(self._uow, self._hasher, self._clock, email, password, name, Role.ADMIN)
            return user, True
        if not update_existing:
            return existing, False
        existing.password_hash = await self._hasher.hash(password)
        existing.role = Role.ADMIN
        existing.is_active = True
        existing.updated_at = self._clock.now()
        async with self._uow() as uow:
            await uow.users.update(existing)
            await uow.commit()
        return existing, False


class SessionStarter:
    """Opens a session (a new refresh-token family) or continues one, and issues the token pair."""

    def __init__(
        self, access_tokens: AccessTokens, refresh_tokens: RefreshTokens, clock: Clock, *, refresh_ttl_seconds: int
    ) -> None:
        self.access_tokens = access_tokens
        self.refresh_tokens = refresh_tokens
        self.clock = clock
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    def new_session(self, user_id: uuid.UUID) -> Session:
        now = self.clock.now()
        return Session(id=uuid.uuid4(), user_id=user_id, created_at=now, expires_at=now + self.refresh_ttl)

    def new_refresh_token(self, session: Session) -> tuple[str, RefreshToken]:
        now = self.clock.now()
        secret = self.refresh_tokens.new()
        row = RefreshToken(
            id=uuid.uuid4(),
            session_id=session.id,
            token_hash=self.refresh_tokens.digest(secret),
            created_at=now,
            expires_at=min(now + self.refresh_ttl, session.expires_at),
        )
        return secret, row


class Login:
    """Email + password → a new session. Unknown email and wrong password are indistinguishable
    (same answer, same work); failures are throttled per client IP and per account."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        sessions: SessionStarter,
        throttle: LoginThrottle,
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._sessions = sessions
        self._throttle = throttle

    async def __call__(self, email: str, password: str, client_ip: str) -> TokenPair:
        account = email.strip().lower()
        retry_after = await self._throttle.retry_after(client_ip, account)
        if retry_after is not None:
            raise RateLimited("Too many failed sign-in attempts; try again later.", retry_after_seconds=retry_after)
        user: User | None = None
        try:
            account = normalise_email(email)
        except InvalidInput:
            pass  # a malformed email is just an unknown account: same answer, same time
        else:
            async with self._uow() as uow:
                user = await uow.users.get_by_email(account)
        ok, new_hash = await self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not ok:
            await self._throttle.record_failure(client_ip, account)
            raise Unauthenticated("Incorrect email or password.", code="invalid_credentials")
        if not user.is_active:
            raise Forbidden("This account is deactivated.", code="account_disabled")
        await self._throttle.reset_account(account)
        session = self._sessions.new_session(user.id)
        refresh_secret, refresh_row = self._sessions.new_refresh_token(session)
        async with self._uow() as uow:
            if new_hash is not None:
                await uow.users.set_password_hash(user.id, new_hash)
            await uow.sessions.add(session)
            await uow.sessions.add_refresh_token(refresh_row)
            await uow.commit()
        access = self._sessions.access_tokens.issue(user.id, session.id)
        return TokenPair(access.token, refresh_secret, access.expires_in, user)


class RefreshSession:
    """Trade a refresh token for a new pair. Each refresh token works once; presenting a used
    one is treated as theft and revokes the whole session (its refresh and access tokens)."""

    def __init__(self, uow: UnitOfWorkFactory, sessions: SessionStarter, revocation: RevocationStore) -> None:
        self._uow = uow
        self._sessions = sessions
        self._revocation = revocation

    async def __call__(self, refresh_token: str) -> TokenPair:
        digest = self._sessions.refresh_tokens.digest(refresh_token)
        now = self._sessions.clock.now()
        async with self._uow() as uow:
            claimed = await uow.sessions.claim_refresh_token(digest, now)
            if claimed is None:
                existing = await uow.sessions.get_refresh_token(digest)
                if existing is None:
                    raise Unauthenticated("The refresh token is not valid.", code="invalid_token")
                await uow.sessions.revoke(existing.session_id, now, "refresh_token_reuse")
                await uow.commit()
                await self._revocation.revoke_sessions([existing.session_id])
                raise Unauthenticated(
                    "The refresh token was already used; the session has been revoked.", code="token_revoked"
                )
            session = await uow.sessions.get(claimed.session_id)
            user = await uow.users.get(session.user_id) if session else None
            if session is None or user is None or session.revoked_at is not None:
                raise Unauthenticated("The session has been revoked.", code="token_revoked")
            if now >= claimed.expires_at or not session.is_usable(now):
                raise Unauthenticated("The refresh token has expired.", code="token_expired")
            if not user.is_active:
                raise Unauthenticated("This account is deactivated.", code="token_revoked")
            secret, row = self._sessions.new_refresh_token(session)
            await uow.sessions.add_refresh_token(row)
            await uow.commit()
        access = self._sessions.access_tokens.issue(user.id, session.id)
        return TokenPair(access.token, secret, access.expires_in, user)


class Logout:
    """End the caller's session: its refresh tokens and access tokens stop working at once."""

    def __init__(self, uow: UnitOfWorkFactory, revocation: RevocationStore, clock: Clock) -> None:
        self._uow = uow
        self._revocation = revocation
        self._clock = clock

    async def __call__(self, principal: Principal) -> None:
        if principal.credential is not CredentialKind.JWT or principal.session_id is None:
            raise InvalidInput(
                "Logout ends a sign-in session; an API key is revoked with DELETE /v1/api-keys/{id}.",
                code="not_a_session",
            )
        session_id = uuid.UUID(principal.session_id)
        async with self._uow() as uow:
            await uow.sessions.revoke(session_id, self._clock.now(), "logout")
            await uow.commit()
        await self._revocation.revoke_sessions([session_id])


class FindUserByEmail:
    """Operator tooling (CLI): the account with this email, if any."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, email: str) -> User | None:
        async with self._uow() as uow:
            return await uow.users.get_by_email(normalise_email(email))


class GetCurrentUser:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal) -> User:
        async with self._uow() as uow:
            user = await uow.users.get(principal.user_id)
        if user is None:
            raise NotFound("No such user.")
        return user


class Authenticator:
    """Turns a credential into a principal without touching Postgres for a known credential.

    Every request costs one round trip to the shared revocation store (Redis). The user (and,
    for a key, the key) comes from a short-TTL in-process cache that is trusted only while the
    versions in the store match the cached ones; otherwise it is reloaded from the database.
    When the revocation store is unreachable, the database is the source of truth; when both
    are, the caller gets `ServiceUnavailable` (never a 401 for an outage).
    """

    def __init__(  # noqa: PLR0917 - collaborators, explicitly
        self,
        uow: UnitOfWorkFactory,
        access_tokens: AccessTokens,
        codec: ApiKeyCodec,
        revocation: RevocationStore,
        cache: IdentityCache,
        last_used: LastUsedRecorder,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._access_tokens = access_tokens
        self._codec = codec
        self._revocation = revocation
        self._cache = cache
        self._last_used = last_used
        self._clock = clock
        # When a cached identity expires under load, one database load per key or user at a
        # time (the requests in flight share it), not one per request.
        self._key_loads: SingleFlight[str, tuple[ApiKey, UserSnapshot, bool]] = SingleFlight()
        self._user_loads: SingleFlight[tuple[uuid.UUID, uuid.UUID | None], tuple[User | None, bool]] = SingleFlight()

    async def _state(self, **ids: uuid.UUID | None) -> RevocationState | None:
        try:
            return await self._revocation.state(**ids)  # type: ignore[arg-type]
        except RevocationUnavailable:
            return None

    async def access_token(self, token: str) -> Principal:
        claims = self._access_tokens.verify(token)
        state = await self._state(user_id=claims.user_id, session_id=claims.session_id)
        if state is not None and state.session_revoked:
            raise Unauthenticated("The session has ended.", code="token_revoked")
        if state is not None and state.user_disabled:
            raise Unauthenticated("This account is deactivated.", code="token_revoked")
        cached = self._cache.get_user(claims.user_id)
        if state is not None and cached is not None and cached.user_version == state.user_version:
            user = cached.user
        else:
            session_id = claims.session_id if state is None else None
            found, session_ended = await self._user_loads.run(
                (claims.user_id, session_id), lambda: self._load_user(claims.user_id, session_id)
            )
            if found is None:
                raise Unauthenticated("The token's user no longer exists.", code="invalid_token")
            if session_ended:
                raise Unauthenticated("The session has ended.", code="token_revoked")
            user = UserSnapshot.of(found)
            if state is not None:
                self._cache.put_user(CachedUser(user, state.user_version))
        if not user.is_active:
            raise Unauthenticated("This account is deactivated.", code="token_revoked")
        return principal_for_session(user, str(claims.session_id))

    async def api_key(self, key: str) -> Principal:
        prefix = self._codec.parse_prefix(key)  # malformed or mistyped: refused with no lookup at all
        digest = self._codec.digest(key)
        cached = self._cache.get_key(digest)
        if cached is not None:
            state = await self._state(user_id=cached.key.user_id, api_key_id=cached.key.id)
            if (
                state is not None
                and state.api_key_version == cached.key_version
                and state.user_version == cached.user_version
            ):
                return self._accept(cached.key, cached.user, state)
        api_key, user, stale_pepper = await self._key_loads.run(digest, lambda: self._load_key(prefix, key))
        state = await self._state(user_id=api_key.user_id, api_key_id=api_key.id)
        if state is not None:
            self._cache.put_key(digest, CachedApiKey(api_key, user, state.api_key_version, state.user_version))
        if stale_pepper:  # hashed with a previous pepper: move it to the current one
            api_key.key_hash = digest
            async with self._uow() as uow:
                await uow.api_keys.set_key_hash(api_key.id, digest)
                await uow.commit()
        return self._accept(api_key, user, state)

    async def _load_user(self, user_id: uuid.UUID, session_id: uuid.UUID | None) -> tuple[User | None, bool]:
        """The user, and (when ``session_id`` is given: the revocation store did not answer)
        whether that session has ended, from the database."""
        async with self._uow() as uow:
            found = await uow.users.get(user_id)
            session = await uow.sessions.get(session_id) if session_id is not None else None
        ended = session_id is not None and (session is None or session.revoked_at is not None)
        return found, ended

    async def _load_key(self, prefix: str, key: str) -> tuple[ApiKey, UserSnapshot, bool]:
        async with self._uow() as uow:
            api_key = await uow.api_keys.get_by_prefix(prefix)
            found_user = await uow.users.get(api_key.user_id) if api_key else None
        if api_key is None or found_user is None:
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        matches, stale_pepper = self._codec.matches(key, api_key.key_hash)
        if not matches:
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        return api_key, UserSnapshot.of(found_user), stale_pepper

    def _accept(self, key: ApiKey, user: UserSnapshot, state: RevocationState | None) -> Principal:
        now = self._clock.now()
        if state is not None and state.api_key_revoked:
            raise Unauthenticated("The API key has been revoked.", code="invalid_api_key")
        if state is not None and state.user_disabled:
            raise Unauthenticated("The API key's account is deactivated.", code="invalid_api_key")
        refusal = key.refusal(now)
        if refusal is not None:
            raise Unauthenticated(refusal, code="invalid_api_key")
        if not user.is_active:
            raise Unauthenticated("The API key's account is deactivated.", code="invalid_api_key")
        self._last_used.record(key.id, now)
        return principal_for_api_key(user, key)
