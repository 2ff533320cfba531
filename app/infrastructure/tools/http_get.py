"""`http_get`: fetch a public URL as text, with SSRF protection.

The rules (see docs/agent.md):

- http and https only; no credentials in the URL; no control characters or backslashes.
- The host is normalised by *real resolution*: IDNA-encoded, trailing dot dropped, then
  resolved with `getaddrinfo` (which also turns `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`
  into what the OS would connect to). EVERY resolved address must be public: private,
  loopback, link-local, CGNAT, unique-local, site-local, multicast, reserved, unspecified,
  documentation/benchmark ranges and any IPv6 address embedding an IPv4 one (mapped,
  compatible, 6to4, Teredo, NAT64) are refused.
- The connection goes to the address that was checked (the URL's host is replaced by the
  IP; the original name is sent as `Host` and as TLS SNI, and the certificate is verified
  against it), so DNS cannot answer differently the second time (rebinding).
- Redirects are followed by hand, at most `max_redirects`, each hop checked again.
- The body is read as it arrives up to `max_bytes` (the rest is cut, marked), the whole
  fetch is bounded by `timeout_seconds`; environment proxies are ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from app.application.tools import ToolError, ToolOutput
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

# (host, port) -> the IP addresses a connection to that host could use.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_CHARS = 2048
USER_AGENT = "agent-api-http_get/1.0"
TRUNCATION_MARKER = "\n[truncated: the response was longer than {limit} bytes]"
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXTUAL = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml",
    "application/javascript",
    "+json",
    "+xml",
)

# Refused on top of everything `ipaddress` does not call global.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",  # IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",
        "2001::/32",  # Teredo
        "2001:db8::/32",
        "2002::/16",  # 6to4
        "fc00::/7",  # unique local
        "fec0::/10",  # site local
        "fe80::/10",
        "ff00::/8",
    )
)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (`getaddrinfo`), off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_refusal(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool = False
) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and (
        address.ipv4_mapped is not None or address.sixtofour is not None or address.teredo is not None
    ):
        return "an IPv6 address embedding an IPv4 address"
    if allow_loopback and address.is_loopback:
        return None
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (any(address in net for net in _EXTRA_BLOCKED if net.version == address.version), "a non-public address"),
        (not address.is_global, "a non-public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


@dataclass(frozen=True, slots=True)
class _Target:
    url: str  # the URL as given (for relative redirects and the output)
    scheme: str
    host: str  # ASCII host name or IP literal, no brackets, no trailing dot
    port: int
    raw_path: bytes
    host_header: str
    is_ip_literal: bool


def parse_target(url: str) -> _Target:
    """Split and normalise a URL, refusing anything ambiguous (raises `ToolError`)."""
    if len(url) > MAX_URL_CHARS:
        raise ToolError(f"the URL is too long (at most {MAX_URL_CHARS} characters)")
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        raise ToolError("the URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ToolError("the URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ToolError("only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise ToolError("URLs with credentials are not allowed")
    raw_host = parts.hostname
    if not raw_host:
        raise ToolError("the URL has no host")
    if "%" in raw_host:
        raise ToolError("IPv6 zone identifiers are not allowed")
    host = raw_host[:-1] if raw_host.endswith(".") else raw_host
    is_ip = True
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        is_ip = False
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ToolError("the host name is not valid") from None
    if not host or host.endswith(".") or "%" in host:
        raise ToolError("the host name is not valid")
    port = port or (443 if scheme == "https" else 80)
    # Percent-encode what is not already URL-safe (keeping existing %XX escapes as they are).
    raw_path = quote(parts.path or "/", safe=_PATH_SAFE).encode("ascii")
    if parts.query:
        raw_path += b"?" + quote(parts.query, safe=_PATH_SAFE + "?").encode("ascii")
    shown = f"[{host}]" if is_ip and ":" in host else host
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    return _Target(url, scheme, host, port, raw_path, shown if default_port else f"{shown}:{port}", is_ip)


class HttpGetTool:
    """Fetches a public URL as text for the model; requires human approval for every call.

    `resolver` and `loopback_hosts_for_tests` exist for tests only: production code
    (`build_tool_registry`) never passes them, and no setting or environment variable
    reaches them. `loopback_hosts_for_tests` names host *names* (never IP literals) that may
    resolve to a loopback address; every other host, every redirect hop to another host, and
    every non-loopback address still gets the full rules.
    """

    name = "http_get"
    description = (
        "Fetch a public web page or API by URL (http/https) and return its text, truncated if long. "
        "Private, loopback and link-local addresses are refused. Each call needs human approval."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_URL_CHARS,
                "description": "The absolute http:// or https:// URL to fetch.",
            }
        },
        "required": ["url"],
        "additionalProperties": False,
    }
    requires_approval = True

    def __init__(
        self,
        *,
        max_bytes: int = 1_000_000,
        timeout_seconds: float = 10.0,
        max_redirects: int = 5,
        resolver: Resolver = system_resolver,
        loopback_hosts_for_tests: Collection[str] = (),
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self._max_bytes = max_bytes
        self._fetch_timeout = timeout_seconds
        self._max_redirects = max_redirects
        self._resolve = resolver
        self._loopback_hosts = frozenset(host.lower() for host in loopback_hosts_for_tests)
        self._verify = verify
        # The use case's cap sits a little above the tool's own, so the tool reports its limit.
        self.timeout_seconds = timeout_seconds + 1.0

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        try:
            async with asyncio.timeout(self._fetch_timeout):
                return await self._fetch(str(arguments["url"]))
        except TimeoutError:
            raise ToolError(f"the fetch did not finish within {self._fetch_timeout:g} seconds") from None

    async def checked_address(self, target: _Target) -> str:
        """Resolve the target's host and return the address to connect to, if every one is public."""
        try:
            addresses = list(await self._resolve(target.host, target.port))
        except (OSError, UnicodeError):
            raise ToolError(f"the host {target.host!r} could not be resolved") from None
        if not addresses:
            raise ToolError(f"the host {target.host!r} could not be resolved")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise ToolError(f"the host {target.host!r} resolved to an unusable address") from None
            allow_loopback = not target.is_ip_literal and target.host in self._loopback_hosts
            reason = address_refusal(address, allow_loopback=allow_loopback)
            if reason is not None:
                log.warning("http_get_refused", host=target.host, reason=reason)
                raise ToolError(f"refused: {target.host!r} resolves to {reason}; only public addresses may be fetched")
        return addresses[0].split("%", 1)[0]

    async def _fetch(self, url: str) -> ToolOutput:
        timeout = httpx.Timeout(self._fetch_timeout)
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=timeout, verify=self._verify
        ) as client:
            target = parse_target(url)
            for _hop in range(self._max_redirects + 1):
                address = await self.checked_address(target)
                request = client.build_request(
                    "GET",
                    httpx.URL(scheme=target.scheme, host=address, port=target.port, raw_path=target.raw_path),
                    headers={
                        "Host": target.host_header,
                        "User-Agent": USER_AGENT,
                        "Accept": "text/html, text/plain, application/json, */*;q=0.5",
                        "Accept-Encoding": "identity",
                    },
                    extensions={"sni_hostname": target.host}
                    if target.scheme == "https" and not target.is_ip_literal
                    else {},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise ToolError(f"could not fetch the URL ({type(exc).__name__})") from None
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        target = parse_target(urljoin(target.url, location))
                        continue
                    return await self._read(target, response)
                finally:
                    await response.aclose()
            raise ToolError(f"too many redirects (at most {self._max_redirects})")

    async def _read(self, target: _Target, response: httpx.Response) -> ToolOutput:
        content_type = response.headers.get("content-type", "")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        result: dict[str, Any] = {"url": target.url, "status": response.status_code, "content_type": content_type}
        if encoding not in ("", "identity"):
            raise ToolError(f"the response is compressed ({encoding}); only uncompressed responses are read")
        if content_type and not any(marker in content_type.lower() for marker in _TEXTUAL):
            return ToolOutput(
                {**result, "content": f"[binary content of type {content_type} not shown]", "truncated": False}
            )
        body = bytearray()
        truncated = False
        try:
            async for chunk in response.aiter_raw():
                body.extend(chunk)
                if len(body) > self._max_bytes:
                    truncated = True
                    del body[self._max_bytes :]
                    break
        except httpx.HTTPError as exc:
            raise ToolError(f"the response could not be read ({type(exc).__name__})") from None
        try:
            text = bytes(body).decode(response.charset_encoding or "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            text = bytes(body).decode("utf-8", errors="replace")
        if truncated:
            text += TRUNCATION_MARKER.format(limit=self._max_bytes)
        return ToolOutput({**result, "content": text, "truncated": truncated})
