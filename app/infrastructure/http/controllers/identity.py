"""Thin controllers of /v1/auth, /v1/api-keys and /v1/admin/users: parse, call one use case, render."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.application.identity.api_keys import ApiKeySpec
from app.application.identity.auth import TokenPair
from app.infrastructure.http.auth import principal_of, requires_admin
from app.infrastructure.http.auth_limits import limit_auth_request, request_client_ip
from app.infrastructure.http.controllers.identity_schemas import (
    ApiKeyCreateBody,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    ApiKeyPatchBody,
    AuthInfo,
    LoginBody,
    MeResponse,
    RefreshBody,
    RegisterBody,
    TokenResponse,
    UserEnvelope,
    UserList,
    UserOut,
    UserPatchBody,
)
from app.infrastructure.ratelimit.resilient import RateLimiters
from app.infrastructure.security.services import IdentityServices

AnyRequest = Request[Any, Any, Any]


def _limits(state: State) -> RateLimiters:
    limits: RateLimiters = state.container.rate_limits
    return limits


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        user=UserOut.of(pair.user),
    )


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED, summary="Create an account (role: user)")
    async def register(
        self,
        request: AnyRequest,
        data: JSONBody[RegisterBody],
        identity: NamedDependency[IdentityServices],
        state: State,
    ) -> Response[UserEnvelope]:
        headers = await limit_auth_request(request, _limits(state))
        user = await identity.register(data.email, data.password, data.name)
        return Response(UserEnvelope(user=UserOut.of(user)), status_code=HTTP_201_CREATED, headers=headers)

    @post("/login", status_code=200, summary="Sign in: an access token and a refresh token")
    async def login(
        self,
        request: AnyRequest,
        data: JSONBody[LoginBody],
        identity: NamedDependency[IdentityServices],
        state: State,
    ) -> Response[TokenResponse]:
        headers = await limit_auth_request(request, _limits(state), email=data.email)
        pair = await identity.login(data.email, data.password, request_client_ip(request, _limits(state)))
        return Response(_tokens(pair), headers=headers)

    @post("/refresh", status_code=200, summary="Trade a refresh token (single use) for a new pair")
    async def refresh(
        self,
        request: AnyRequest,
        data: JSONBody[RefreshBody],
        identity: NamedDependency[IdentityServices],
        state: State,
    ) -> Response[TokenResponse]:
        headers = await limit_auth_request(request, _limits(state))
        pair = await identity.refresh(data.refresh_token)
        return Response(_tokens(pair), headers=headers)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, summary="End this session (access and refresh tokens)")
    async def logout(self, request: AnyRequest, identity: NamedDependency[IdentityServices]) -> None:
        await identity.logout(principal_of(request))

    @get("/me", summary="The caller and how they authenticated")
    async def me(self, request: AnyRequest, identity: NamedDependency[IdentityServices]) -> MeResponse:
        principal = principal_of(request)
        user = await identity.current_user(principal)
        return MeResponse(user=UserOut.of(user), auth=AuthInfo.of(principal))


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]

    @post("/", status_code=HTTP_201_CREATED, guards=[requires_admin], summary="Issue a key (admin)")
    async def issue(
        self, request: AnyRequest, data: JSONBody[ApiKeyCreateBody], identity: NamedDependency[IdentityServices]
    ) -> ApiKeyCreated:
        key, secret = await identity.issue_api_key(
            principal_of(request),
            ApiKeySpec(
                name=data.name,
                user_id=data.user_id,
                allowed_models=data.allowed_models,
                allowed_tools=data.allowed_tools,
                rpm_limit=data.rpm_limit,
                tpm_limit=data.tpm_limit,
                daily_token_budget=data.daily_token_budget,
                expires_at=data.expires_at,
            ),
        )
        return ApiKeyCreated.created(key, secret)

    @get("/", summary="List keys (admin: all, or ?user_id=; user: own)")
    async def list_keys(
        self,
        request: AnyRequest,
        identity: NamedDependency[IdentityServices],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="1-100")] = 20,
        cursor: FromQuery[str | None] = None,
        user_id: FromQuery[uuid.UUID | None] = None,
    ) -> ApiKeyList:
        keys, next_cursor = await identity.list_api_keys(
            principal_of(request), user_id=user_id, limit=limit, cursor=cursor
        )
        return ApiKeyList(data=[ApiKeyOut.of(k) for k in keys], next_cursor=next_cursor)

    @get("/{key_id:uuid}", summary="One key (admin, or its owner)")
    async def get_key(
        self, request: AnyRequest, key_id: FromPath[uuid.UUID], identity: NamedDependency[IdentityServices]
    ) -> ApiKeyOut:
        return ApiKeyOut.of(await identity.get_api_key(principal_of(request), key_id))

    @patch("/{key_id:uuid}", guards=[requires_admin], summary="Change a key's name, scopes, limits or expiry")
    async def update_key(
        self,
        request: AnyRequest,
        key_id: FromPath[uuid.UUID],
        data: JSONBody[ApiKeyPatchBody],
        identity: NamedDependency[IdentityServices],
    ) -> ApiKeyOut:
        changes = {name: getattr(data, name) for name in data.model_fields_set}
        return ApiKeyOut.of(await identity.update_api_key(principal_of(request), key_id, changes))

    @delete("/{key_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Revoke a key (admin, or its owner)")
    async def revoke_key(
        self, request: AnyRequest, key_id: FromPath[uuid.UUID], identity: NamedDependency[IdentityServices]
    ) -> None:
        await identity.revoke_api_key(principal_of(request), key_id)


class AdminUsersController(Controller):
    path = "/v1/admin/users"
    tags = ["admin"]
    guards = [requires_admin]

    @get("/", summary="List users (admin)")
    async def list_users(
        self,
        request: AnyRequest,
        identity: NamedDependency[IdentityServices],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="1-100")] = 20,
        cursor: FromQuery[str | None] = None,
    ) -> UserList:
        users, next_cursor = await identity.list_users(principal_of(request), limit=limit, cursor=cursor)
        return UserList(data=[UserOut.of(u) for u in users], next_cursor=next_cursor)

    @patch("/{user_id:uuid}", summary="Change a user's role or deactivate them (admin)")
    async def update_user(
        self,
        request: AnyRequest,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[UserPatchBody],
        identity: NamedDependency[IdentityServices],
    ) -> UserOut:
        user = await identity.update_user(principal_of(request), user_id, role=data.role, is_active=data.is_active)
        return UserOut.of(user)
