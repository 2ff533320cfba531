"""Settings: one object, grouped per concern, read from the environment and an optional `.env`.

Variable names are the flat ones of the operator contract (``DATABASE_URL``, ``JWT_SECRET``...);
each group is its own `BaseSettings` so it can be built and overridden on its own in tests.
Outside development the service refuses to start with weak secrets (see `Settings`).
"""

from __future__ import annotations

import enum
import ipaddress
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
# Values that are obviously not real secrets (copied from an example, or typed in haste).
_PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "placeholder",
    "example",
    "your-secret",
    "xxxx",
)
# Used only when APP_ENV=development and no secret is set; refused everywhere else.
DEVELOPMENT_JWT_SECRET = "insecure-development-only-jwt-secret-0123456789"  # noqa: S105 - labelled dev value
DEVELOPMENT_API_KEY_PEPPER = "insecure-development-only-api-key-pepper-0123456789"


def _config(prefix: str = "") -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `KEY=` in .env means "use the default"
    )


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ServerSettings(BaseSettings):
    """Where and how the HTTP server listens."""

    model_config = _config()

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    request_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    cors_allow_origins: CsvList = Field(default_factory=list)
    public_url: str | None = None
    # Young collections every this many allocations while serving, with the start-up objects
    # frozen (app/infrastructure/http/app.py, docs/benchmarks.md); 0 leaves CPython's collector
    # exactly as it is (700, no freeze).
    gc_young_threshold: int = Field(10_000, ge=0, le=1_000_000)

    _split = field_validator("cors_allow_origins", mode="before")(_split_csv)


class DatabaseSettings(BaseSettings):
    """Postgres. An unset URL means the embedded local Postgres (development only)."""

    model_config = _config("DATABASE_")

    url: SecretStr | None = None
    pool_size: int = Field(10, ge=1, le=200)
    max_overflow: int = Field(10, ge=0, le=200)
    # Short: a request waiting this long for a connection gets 503, not a hang.
    pool_timeout_seconds: float = Field(2.0, gt=0, le=60)
    connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    statement_timeout_ms: int = Field(15_000, ge=0)
    # Apply migrations at start-up (default: on in development, off elsewhere).
    auto_migrate: bool | None = None
    echo: bool = False


class RedisSettings(BaseSettings):
    """Redis. An unset URL means the in-process limiter (single process only)."""

    model_config = _config("REDIS_")

    url: SecretStr | None = None
    socket_timeout_seconds: float = Field(0.25, gt=0, le=30)
    max_connections: int = Field(64, ge=1, le=10_000)
    # Every key this service writes starts with this (several deployments can share one Redis).
    key_prefix: str = "agent-api:"
    # The client of the per-request calls (limit scripts, revocation reads): `pipelined`, one
    # auto-pipelined connection per process (measured ~4x cheaper, docs/benchmarks.md), or redis-py's
    # pool. A URL the pipelined client cannot serve (unix://) uses redis-py either way.
    hot_path_client: Literal["pipelined", "redis-py"] = "pipelined"


class RateLimitFailurePolicy(enum.StrEnum):
    """What the limits do while Redis is down: admit all, enforce per process, or refuse (503)."""

    OPEN = "open"
    LOCAL = "local"
    CLOSED = "closed"


class RateLimitSettings(BaseSettings):
    """Rate limits and quotas: defaults per API key and per user, auth limits, Redis failure policy.

    Limit values of 0 mean "no limit". An API key's own `rpm_limit`/`tpm_limit`/
    `daily_token_budget` override the key defaults.
    """

    model_config = _config("RATE_LIMIT_")

    key_rpm: int = Field(60, ge=0, le=1_000_000)
    key_tpm: int = Field(100_000, ge=0, le=30_000_000)
    key_daily_token_budget: int = Field(0, ge=0)
    key_max_streams: int = Field(10, ge=0, le=100_000)
    user_rpm: int = Field(60, ge=0, le=1_000_000)
    user_tpm: int = Field(100_000, ge=0, le=30_000_000)
    user_daily_token_budget: int = Field(0, ge=0)
    user_max_streams: int = Field(10, ge=0, le=100_000)
    # Auth endpoints (login, registration, refresh): per client IP and per account.
    auth_ip_rpm: int = Field(30, ge=0, le=1_000_000)
    auth_account_rpm: int = Field(10, ge=0, le=1_000_000)
    api_failure_policy: RateLimitFailurePolicy = RateLimitFailurePolicy.LOCAL
    auth_failure_policy: RateLimitFailurePolicy = RateLimitFailurePolicy.CLOSED
    # Completion tokens reserved per choice when neither the request (max_tokens) nor the model caps them.
    default_max_tokens: int = Field(4096, ge=1, le=1_000_000)
    # A stream's slot expires this long after its last renewal if its process dies.
    lease_ttl_seconds: float = Field(120.0, ge=1, le=3600)
    # While Redis is down, how often one background PING checks whether it is back.
    recovery_probe_seconds: float = Field(1.0, gt=0, le=5)
    # Proxies (CIDRs or addresses) whose X-Forwarded-For is believed; empty = nobody's.
    trusted_proxies: CsvList = Field(default_factory=list)

    _split = field_validator("trusted_proxies", mode="before")(_split_csv)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from exc
        return value


class SecuritySettings(BaseSettings):
    """Secrets for tokens and key hashing."""

    model_config = _config()

    jwt_secret: SecretStr | None = None
    api_key_pepper: SecretStr | None = None


def _split_secrets(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


SecretCsvList = Annotated[list[SecretStr], NoDecode]


class AuthSettings(BaseSettings):
    """Sessions, tokens, password hashing, API-key caching and login throttling."""

    model_config = _config()

    jwt_issuer: str = "agent-api"
    jwt_audience: str = "agent-api"
    access_token_ttl_seconds: int = Field(900, ge=30, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(30 * 24 * 3600, ge=60, le=365 * 24 * 3600)
    jwt_leeway_seconds: int = Field(10, ge=0, le=30)
    # Signing-key rotation: the secrets JWT_SECRET replaced keep verifying (never signing)
    # until JWT_ROTATED_AT + JWT_ROTATION_OVERLAP_SECONDS (JWT_ROTATED_AT unset: process start).
    jwt_previous_secrets: SecretCsvList = Field(default_factory=list)
    jwt_rotated_at: datetime | None = None
    jwt_rotation_overlap_seconds: int = Field(960, ge=0, le=30 * 24 * 3600)
    # Pepper rotation: keys hashed with a previous pepper still authenticate and are re-hashed.
    api_key_previous_peppers: SecretCsvList = Field(default_factory=list)
    # argon2id; the defaults are OWASP's (19 MiB, 2 iterations, 1 lane).
    argon2_memory_kib: int = Field(19 * 1024, ge=8, le=4 * 1024 * 1024)
    argon2_time_cost: int = Field(2, ge=1, le=100)
    argon2_parallelism: int = Field(1, ge=1, le=64)
    # In-process cache of authenticated API keys and users (revocation is checked in Redis on every request).
    identity_cache_ttl_seconds: float = Field(60.0, ge=0, le=3600)
    identity_cache_max_entries: int = Field(10_000, ge=1)
    # How long one instance reuses a revocation read from Redis for the same credential. A
    # revocation reaches every instance within this (the contract asks for 1 s); 0 reads per request.
    revocation_cache_seconds: float = Field(0.25, ge=0, le=1.0)
    # `last_used_at` of a key is written behind the request, at most once per interval.
    api_key_last_used_interval_seconds: float = Field(60.0, ge=1)
    api_key_last_used_queue_size: int = Field(10_000, ge=1)
    # Failed logins allowed per window before 429, per account and per client IP.
    login_max_failures_per_account: int = Field(5, ge=1)
    login_max_failures_per_ip: int = Field(20, ge=1)
    login_failure_window_seconds: int = Field(900, ge=1)

    _split = field_validator("jwt_previous_secrets", "api_key_previous_peppers", mode="before")(_split_secrets)


class LLMSettings(BaseSettings):
    """The upstream model(s). Unset base URL means the demo provider."""

    model_config = _config()

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_models: CsvList = Field(default_factory=list)
    models_config: str | None = None
    # Upstream client policy (per-upstream overrides live in the MODELS_CONFIG file).
    llm_connect_timeout_seconds: float = Field(5.0, gt=0, le=300)
    llm_first_byte_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    llm_idle_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    llm_total_timeout_seconds: float = Field(600.0, gt=0, le=24 * 3600)
    llm_max_retries: int = Field(2, ge=0, le=10)
    llm_max_retry_wait_seconds: float = Field(10.0, ge=0, le=300)
    llm_max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    llm_max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Connections per upstream per worker; every open stream holds one for its whole life.
    llm_max_connections: int = Field(1000, ge=1, le=100_000)
    # The upstream HTTP/1.1 client: the native one (app/infrastructure/llm/http1.py, the least CPU,
    # docs/benchmarks.md), httpx over aiohttp, or httpx over httpcore. A proxy from the environment
    # makes "native" use httpx for that upstream.
    llm_http_transport: Literal["native", "aiohttp", "httpx"] = "native"
    # A `: ping` comment is sent on a chat stream idle this long.
    llm_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    # Usage records are written behind the request, in batches.
    usage_batch_size: int = Field(100, ge=1, le=10_000)
    usage_flush_interval_ms: int = Field(500, ge=1, le=60_000)
    usage_queue_size: int = Field(10_000, ge=1, le=1_000_000)

    _split = field_validator("llm_models", mode="before")(_split_csv)


class BootstrapSettings(BaseSettings):
    """Start-up chores: the first admin, open registration, the shutdown drain."""

    model_config = _config()

    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None
    allow_registration: bool = Field(True)
    shutdown_drain_seconds: float = Field(25.0, ge=0, le=3600)
    # An agent run whose heartbeat (every ~2 s while it runs) is older than this at start-up
    # has no live process driving it: it is ended as failed ("interrupted").
    stale_run_seconds: float = Field(120.0, ge=10, le=86_400)


class ToolsSettings(BaseSettings):
    """The server-side tools: limits of `http_get`, the `web_search` backend, plugins.

    Deliberately absent: any switch that lets `http_get` reach private or loopback addresses.
    Tests get that only by constructing the tool themselves (see `HttpGetTool`).
    """

    model_config = _config("TOOLS_")

    http_get_max_bytes: int = Field(1_000_000, ge=1024, le=50_000_000)
    http_get_timeout_seconds: float = Field(10.0, gt=0, le=120)
    http_get_max_redirects: int = Field(5, ge=0, le=20)
    # A JSON search endpoint (GET ?q=&limit= -> {"results": [{title, url, snippet}]}); unset = no web_search.
    web_search_url: str | None = None
    web_search_api_key: SecretStr | None = None
    web_search_timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Load third-party tools from the `agent_api.tools` entry point group at start-up.
    plugins_enabled: bool = True
    # Calls of one batch running at the same time.
    batch_concurrency: int = Field(4, ge=1, le=16)


class AgentSettings(BaseSettings):
    """The agent loop's bounds and its event streams (conversations and server tools)."""

    model_config = _config("AGENT_")

    # Model for a conversation that names none (and a message that names none); unset = the
    # first model of the routing configuration.
    default_model: str | None = None
    # Model calls per run unless the request says otherwise (`max_iterations`), and the most a
    # request may ask for.
    max_iterations: int = Field(8, ge=1, le=100)
    max_iterations_limit: int = Field(32, ge=1, le=100)
    # Outer bound on one tool run (each tool has its own, usually shorter, limit).
    tool_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # Tokens (prompt + completion over every model call) one run may spend; unset = unlimited.
    token_budget: int | None = Field(None, ge=1)
    # max_tokens of each model call; unset = the upstream's (or the model's cap).
    max_tokens_per_turn: int | None = Field(None, ge=1)
    # A ": ping" comment on an agent event stream idle this long.
    heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    # How often a running run re-reads its status (a cancellation from another process). Kept
    # well below any "run looks dead" threshold: on main this poll is also the run's heartbeat.
    status_poll_seconds: float = Field(2.0, gt=0, le=30)

    @model_validator(mode="after")
    def _check_limits(self) -> AgentSettings:
        if self.max_iterations > self.max_iterations_limit:
            raise ValueError("AGENT_MAX_ITERATIONS must not exceed AGENT_MAX_ITERATIONS_LIMIT")
        return self


class LoggingSettings(BaseSettings):
    model_config = _config("LOG_")

    level: str = "INFO"
    # JSON lines (production default); "console" renders human-friendly lines.
    format: str = Field("json", pattern="^(json|console)$")


class Settings(BaseSettings):
    """All settings. Build with `load_settings()`; tests pass groups explicitly."""

    model_config = _config()

    app_env: Environment = Field(Environment.DEVELOPMENT)
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if self.app_env is Environment.DEVELOPMENT:
            return self
        for env_name, value in (
            ("JWT_SECRET", self.security.jwt_secret),
            ("API_KEY_PEPPER", self.security.api_key_pepper),
        ):
            problem = secret_problem(value.get_secret_value() if value else None)
            if problem:
                raise ValueError(f"{env_name} {problem} (APP_ENV={self.app_env.value})")
        if self.database.url is None:
            raise ValueError(f"DATABASE_URL must be set outside development (APP_ENV={self.app_env.value})")
        return self

    @property
    def is_development(self) -> bool:
        return self.app_env is Environment.DEVELOPMENT

    @cached_property
    def jwt_secret(self) -> str:
        secret = self.security.jwt_secret
        return secret.get_secret_value() if secret else DEVELOPMENT_JWT_SECRET

    @cached_property
    def api_key_pepper(self) -> str:
        pepper = self.security.api_key_pepper
        return pepper.get_secret_value() if pepper else DEVELOPMENT_API_KEY_PEPPER

    @property
    def auto_migrate(self) -> bool:
        if self.database.auto_migrate is not None:
            return self.database.auto_migrate
        return self.is_development


def secret_problem(value: str | None) -> str | None:
    """Why `value` is not acceptable as a production secret, or None when it is."""
    if not value:
        return "is missing; set it to a random value of at least 32 bytes"
    lowered = value.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS) or value in (
        DEVELOPMENT_JWT_SECRET,
        DEVELOPMENT_API_KEY_PEPPER,
    ):
        return "is a placeholder; set it to a random value of at least 32 bytes"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is too short ({len(value.encode())} bytes); it must be at least {MIN_SECRET_BYTES} bytes"
    if len(set(value)) < 8:
        return "has too little variety to be a random secret"
    return None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and `.env`), with optional overrides."""
    return Settings(**overrides)


def first_error_line(exc: Exception) -> str:
    """One human line out of a settings ValidationError (the CLI prints it and exits)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            first = items[0]
            msg = str(first.get("msg", exc))
            loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
            msg = msg.removeprefix("Value error, ")
            return f"invalid settings: {msg}" if not loc else f"invalid settings: {loc}: {msg}"
    return f"invalid settings: {exc}"
