"""argon2id password hashing through the passlib API (the maintained `libpass` fork)."""

from __future__ import annotations

import asyncio
import secrets

from passlib.context import CryptContext


class Argon2PasswordHasher:
    """Hashes and verifies in a worker thread (argon2 is deliberately slow; the event loop is not).

    Parameters default to OWASP's (m=19 MiB, t=2, p=1). A stored hash made with other
    parameters still verifies and is replaced on the next successful login. An unknown
    account is verified against a dummy hash made with the same parameters, so it costs the
    same time as a wrong password.
    """

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__rounds=time_cost,
            argon2__parallelism=parallelism,
        )
        self._dummy_hash = self._context.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        result: str = await asyncio.to_thread(self._context.hash, password)
        return result

    def _verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        if password_hash is None:
            self._context.verify(password, self._dummy_hash)
            return False, None
        try:
            ok, new_hash = self._context.verify_and_update(password, password_hash)
        except ValueError:  # not a hash this context knows: treat as a mismatch, never a 500
            self._context.verify(password, self._dummy_hash)
            return False, None
        return bool(ok), new_hash if ok else None

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        return await asyncio.to_thread(self._verify, password, password_hash)
