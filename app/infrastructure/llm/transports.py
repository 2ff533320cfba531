"""The HTTP seam under `OpenAICompatibleClient`: one ``POST`` to the upstream, its answer streamed.

Three interchangeable implementations, chosen by ``LLM_HTTP_TRANSPORT`` (docs/benchmarks.md
has the measurements behind the default):

- ``native`` (default): `app.infrastructure.llm.http1`, a purpose-built HTTP/1.1 client on
  asyncio protocols and httptools; the least CPU per request;
- ``aiohttp``: httpx over the ``httpx-aiohttp`` transport (aiohttp's pool);
- ``httpx``: httpx over its default transport (httpcore).

The native client does not speak to proxies: when ``HTTP_PROXY`` / ``HTTPS_PROXY`` /
``ALL_PROXY`` apply to the upstream (``NO_PROXY`` honoured), that upstream is served by the
``httpx`` transport with ``trust_env`` instead, and it is logged once when the client is built.
The same for a base URL carrying ``user:password@`` (httpx sends it as basic auth).

Every implementation raises the same errors (`TransportConnectError`,
`TransportTimeoutError`, `TransportRequestError`) from ``post``, and names the errors its
responses' ``read`` may raise in ``read_errors``, so the client maps all three alike.
"""

from __future__ import annotations

import urllib.request
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.infrastructure.llm.http1 import (
    Http1Client,
    Http1ConnectError,
    Http1Error,
    Http1PoolTimeout,
)
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

TransportKind = Literal["native", "aiohttp", "httpx"]
TRANSPORT_KINDS: tuple[TransportKind, ...] = ("native", "aiohttp", "httpx")
# Idle upstream connections are closed after this long (every transport).
KEEPALIVE_SECONDS = 5.0


class TransportError(Exception):
    """A failure of the HTTP exchange; ``kind`` names the underlying error (for logs)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class TransportConnectError(TransportError):
    """No connection (refused, unresolvable, TLS, connect timeout, or the pool stayed full)."""


class TransportTimeoutError(TransportError):
    """A timeout of the library itself while sending (e.g. httpx's write timeout)."""


class TransportRequestError(TransportError):
    """The exchange failed after connecting and before the answer's head arrived."""


class UpstreamResponse(Protocol):
    """An answer whose head arrived; its body is read piece by piece."""

    @property
    def status_code(self) -> int: ...

    def header(self, name: str) -> str | None:
        """A header's value, case-insensitive; None when absent."""

    async def read(self) -> bytes:
        """What arrived since the last read (never empty); ``b""`` at the end of the body."""

    async def aclose(self) -> None:
        """Releases the connection (back to the pool when the body was read to its end)."""


class UpstreamTransport(Protocol):
    """Sends the JSON body to the upstream's chat completions URL."""

    # What `UpstreamResponse.read` may raise when the connection breaks mid-body.
    read_errors: tuple[type[Exception], ...]

    async def post(self, payload: bytes) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


class NativeTransport:
    """`Http1Client`: one pool for the upstream's origin; its `Http1Response` is the response."""

    read_errors: tuple[type[Exception], ...] = (Http1Error,)

    def __init__(self, url: str, headers: dict[str, str], *, max_connections: int, connect_timeout: float) -> None:
        self._client = Http1Client(
            headers=headers,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            keepalive_seconds=KEEPALIVE_SECONDS,
        )
        self._endpoint = self._client.endpoint(url)

    @property
    def client(self) -> Http1Client:
        return self._client

    async def post(self, payload: bytes) -> UpstreamResponse:
        try:
            return await self._endpoint.post(payload)
        except (Http1ConnectError, Http1PoolTimeout) as exc:
            raise TransportConnectError(type(exc).__name__) from exc
        except Http1Error as exc:
            raise TransportRequestError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


# httpx's own errors, and aiohttp's that the httpx-aiohttp transport lets through unmapped
# (e.g. `ClientResponseError` for an answer that is not HTTP at all).
_HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, aiohttp.ClientError)


class _HttpxResponse:
    __slots__ = ("_iterator", "_response", "status_code")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self._iterator = response.aiter_bytes().__aiter__()

    def header(self, name: str) -> str | None:
        value: str | None = self._response.headers.get(name)
        return value

    async def read(self) -> bytes:
        while True:
            try:
                piece = await self._iterator.__anext__()
            except StopAsyncIteration:
                return b""
            if piece:
                return piece

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """httpx, over aiohttp's pool (``aiohttp=True``) or its default transport (httpcore)."""

    read_errors: tuple[type[Exception], ...] = _HTTPX_ERRORS

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
        write_timeout: float,
        aiohttp: bool,
        trust_env: bool = True,
    ) -> None:
        self._url = url
        limits = httpx.Limits(
            max_connections=max_connections,
            # Idle connections are all kept (they expire): a smaller keep-alive pool than the pool
            # itself closes and reopens connections on every wave of concurrent requests.
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        self._http = httpx.AsyncClient(
            headers=headers,
            transport=AiohttpTransport(limits=limits) if aiohttp else None,
            timeout=httpx.Timeout(connect=connect_timeout, read=None, write=write_timeout, pool=connect_timeout),
            limits=limits,
            follow_redirects=False,
            trust_env=trust_env,
        )

    async def post(self, payload: bytes) -> UpstreamResponse:
        request = self._http.build_request(
            "POST", self._url, content=payload, headers={"Content-Type": "application/json"}
        )
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportConnectError(type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise TransportTimeoutError(type(exc).__name__) from exc
        except _HTTPX_ERRORS as exc:
            raise TransportRequestError(type(exc).__name__) from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._http.aclose()


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for `url` (``*_PROXY``, ``NO_PROXY`` honoured), if any."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    if not proxy or not parts.hostname:
        return None
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    if urllib.request.proxy_bypass(host):
        return None
    return proxy


def build_transport(
    kind: str,
    url: str,
    headers: dict[str, str],
    *,
    max_connections: int,
    connect_timeout: float,
    write_timeout: float,
    upstream: str = "",
) -> UpstreamTransport:
    """The transport `kind` for `url`; ``native`` falls back to ``httpx`` when a proxy applies."""
    if kind not in TRANSPORT_KINDS:
        raise ValueError(f"unknown upstream HTTP transport {kind!r} (one of {', '.join(TRANSPORT_KINDS)})")
    if kind == "native":
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # Basic credentials in the URL: httpx sends them, the native client does not.
            log.warning("upstream_native_fallback", upstream=upstream, transport="httpx", reason="credentials in URL")
            kind = "httpx"
        elif proxy_for(url) is None:
            return NativeTransport(url, headers, max_connections=max_connections, connect_timeout=connect_timeout)
        else:
            log.warning(
                "upstream_proxy_fallback", upstream=upstream, transport="httpx", reason="proxy from environment"
            )
            kind = "httpx"
    return HttpxTransport(
        url,
        headers,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        write_timeout=write_timeout,
        aiohttp=kind == "aiohttp",
    )
