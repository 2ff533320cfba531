"""The principal: who is calling, and what they may do.

The auth middleware resolves a credential (a JWT access token or an API key) into one of
these and puts it on the request (`request.user`). Every permission check downstream, in
any layer, asks the principal, never the credential.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.users import Role


class CredentialKind(enum.StrEnum):
    JWT = "jwt"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-credential limits; None means "the configured default applies"."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None
    daily_token_budget: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    email: str
    role: Role
    credential: CredentialKind
    # Set for API keys; for JWTs the session id (`sid`) identifies the login.
    api_key_id: uuid.UUID | None = None
    session_id: str | None = None
    # Scope lists: None = everything, () = nothing, otherwise exactly those names.
    allowed_models: tuple[str, ...] | None = None
    allowed_tools: tuple[str, ...] | None = None
    limits: Limits = Limits()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_use_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def may_use_tool(self, tool: str) -> bool:
        return self.allowed_tools is None or tool in self.allowed_tools

    def visible_models(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if self.may_use_model(name)]

    def visible_tools(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if self.may_use_tool(name)]
