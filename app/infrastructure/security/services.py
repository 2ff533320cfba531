"""The identity use cases and adapters of one application instance (built by `container.build_identity`)."""

from __future__ import annotations

from dataclasses import dataclass

from app.application.identity.api_keys import GetApiKey, IssueApiKey, ListApiKeys, RevokeApiKey, UpdateApiKey
from app.application.identity.auth import (
    Authenticator,
    EnsureAdmin,
    FindUserByEmail,
    GetCurrentUser,
    Login,
    Logout,
    RefreshSession,
    RegisterUser,
)
from app.application.identity.users import ListUsers, UpdateUser
from app.infrastructure.security.last_used import BackgroundLastUsedWriter


@dataclass
class IdentityServices:
    authenticator: Authenticator
    register: RegisterUser
    login: Login
    refresh: RefreshSession
    logout: Logout
    current_user: GetCurrentUser
    find_user: FindUserByEmail
    ensure_admin: EnsureAdmin
    issue_api_key: IssueApiKey
    list_api_keys: ListApiKeys
    get_api_key: GetApiKey
    update_api_key: UpdateApiKey
    revoke_api_key: RevokeApiKey
    list_users: ListUsers
    update_user: UpdateUser
    last_used_writer: BackgroundLastUsedWriter
