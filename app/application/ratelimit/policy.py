"""Who is limited, and by what: subjects and policies out of the caller and the configured defaults."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from app.application.ratelimit.types import LimitPolicy
from app.domain.principal import CredentialKind, Principal


@dataclass(frozen=True, slots=True)
class CallerLimitDefaults:
    """Defaults for one kind of caller (API keys, or JWT users); 0 = unlimited."""

    requests_per_minute: int
    tokens_per_minute: int
    daily_token_budget: int
    max_concurrent_streams: int


@dataclass(frozen=True, slots=True)
class AuthLimitDefaults:
    """Limits of the auth endpoints (login, register, refresh), per client IP and per account."""

    per_ip_per_minute: int
    per_account_per_minute: int


def _or_default(value: int | None, default: int) -> int | None:
    chosen = default if value is None else value
    return chosen or None


def policy_for_principal(
    principal: Principal, *, api_keys: CallerLimitDefaults, users: CallerLimitDefaults
) -> tuple[str, LimitPolicy]:
    """The subject and limits of an authenticated caller.

    An API key is limited on its own (``key:<id>``) by its own limits, each falling back to
    the API-key default; a JWT caller per user (``user:<id>``) by the user defaults.
    """
    if principal.credential is CredentialKind.API_KEY and principal.api_key_id is not None:
        own = principal.limits
        return f"key:{principal.api_key_id}", LimitPolicy(
            requests_per_window=_or_default(own.rpm_limit, api_keys.requests_per_minute),
            tokens_per_window=_or_default(own.tpm_limit, api_keys.tokens_per_minute),
            daily_token_budget=_or_default(own.daily_token_budget, api_keys.daily_token_budget),
            max_concurrent_streams=api_keys.max_concurrent_streams or None,
        )
    return f"user:{principal.user_id}", LimitPolicy(
        requests_per_window=users.requests_per_minute or None,
        tokens_per_window=users.tokens_per_minute or None,
        daily_token_budget=users.daily_token_budget or None,
        max_concurrent_streams=users.max_concurrent_streams or None,
    )


def ip_subject(address: str) -> str:
    """The subject of an unauthenticated client address (use `client_ip` to find it)."""
    return f"ip:{address}"


def account_subject(email: str) -> str:
    """The subject of an account named in an auth request.

    The address is hashed so no e-mail address ever appears in a Redis key name.
    """
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"account:{digest}"


def auth_policies(defaults: AuthLimitDefaults) -> tuple[LimitPolicy, LimitPolicy]:
    """(per-IP policy, per-account policy) for the auth endpoints."""
    return (
        LimitPolicy(requests_per_window=defaults.per_ip_per_minute or None),
        LimitPolicy(requests_per_window=defaults.per_account_per_minute or None),
    )
