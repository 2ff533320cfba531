"""http_get against real loopback servers: SSRF refusals prove no connection was made.

Every refused target points at a real listener (a thread counting accepted TCP connections)
so "refused" means "never connected", not just "returned an error". Allowed fetches use a
test-mapped host name (`loopback_hosts_for_tests`), which no setting can enable.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from app.application.tools import ToolError
from app.config import ToolsSettings
from app.infrastructure.tools.http_get import TRUNCATION_MARKER, HttpGetTool, Resolver, system_resolver
from app.infrastructure.tools.registry import build_tool_registry
from tests.support.http_listener import CountingHTTPServer, redirect, reply


@pytest.fixture
def server() -> Iterator[CountingHTTPServer]:
    srv = CountingHTTPServer().start()
    srv.routes["/hello"] = lambda h: reply(h, 200, b"hello world", "text/plain; charset=utf-8")
    yield srv
    srv.stop()


@pytest.fixture
def other_server() -> Iterator[CountingHTTPServer]:
    srv = CountingHTTPServer().start()
    srv.routes["/"] = lambda h: reply(h, 200, b"internal secrets")
    yield srv
    srv.stop()


@pytest.fixture
def server6() -> Iterator[CountingHTTPServer | None]:
    """A listener on ::1 when this machine has IPv6 loopback (then [::1] refusals are proven too)."""
    try:
        srv = CountingHTTPServer("::1").start()
    except OSError:
        yield None
        return
    yield srv
    srv.stop()


class MappingResolver:
    """Maps test names to fixed answers (a list per lookup, in order); other names go to the OS."""

    def __init__(self, mapping: dict[str, Sequence[Sequence[str]]]) -> None:
        self.mapping = {name: list(answers) for name, answers in mapping.items()}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        answers = self.mapping.get(host)
        if answers:
            return answers.pop(0) if len(answers) > 1 else answers[0]
        return await system_resolver(host, port)


def tool(resolver: Resolver = system_resolver, *, test_hosts: Sequence[str] = (), **limits: float) -> HttpGetTool:
    return HttpGetTool(resolver=resolver, loopback_hosts_for_tests=test_hosts, **limits)  # type: ignore[arg-type]


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/hello",
    "http://127.0.0.1.:{port}/hello",
    "http://2130706433:{port}/hello",
    "http://0177.0.0.1:{port}/hello",
    "http://0x7f.1:{port}/hello",
    "http://0x7f000001:{port}/hello",
    "http://127.1:{port}/hello",
    "http://127.000.000.001:{port}/hello",
    "http://localhost:{port}/hello",
    "http://LOCALHOST.:{port}/hello",
    "http://ⓛocalhost:{port}/hello",
    "http://127。0。0。1:{port}/hello",
    "http://0:{port}/hello",
    "http://0.0.0.0:{port}/hello",
    "http://[::ffff:127.0.0.1]:{port}/hello",
    "http://[::ffff:7f00:1]:{port}/hello",
    "http://[::127.0.0.1]:{port}/hello",
    "https://127.0.0.1:{port}/hello",
]


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
async def test_every_spelling_of_loopback_is_refused_without_connecting(
    server: CountingHTTPServer, template: str
) -> None:
    with pytest.raises(ToolError, match="refused"):
        await tool().run({"url": template.format(port=server.port)})
    assert server.accepted == 0


@pytest.mark.parametrize("template", ["http://[::1]:{port}/hello", "http://[::]:{port}/hello"])
async def test_ipv6_loopback_and_unspecified_are_refused(
    server6: CountingHTTPServer | None, server: CountingHTTPServer, template: str
) -> None:
    port = server6.port if server6 is not None else server.port
    with pytest.raises(ToolError, match="refused"):
        await tool().run({"url": template.format(port=port)})
    assert server.accepted == 0
    assert server6 is None or server6.accepted == 0


NON_PUBLIC = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not a bind
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:a00:1::1",
    "64:ff9b::a00:1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_every_resolved_address_is_checked(server: CountingHTTPServer, address: str) -> None:
    # The first answer is loopback (allowed for this test host), the second is not: refused.
    resolver = MappingResolver({"mixed.test": [["127.0.0.1", address]]})
    with pytest.raises(ToolError, match="refused"):
        await tool(resolver, test_hosts=["mixed.test"]).run({"url": f"http://mixed.test:{server.port}/hello"})
    assert server.accepted == 0


async def test_fetches_an_allowed_host_and_connects_to_the_checked_address(server: CountingHTTPServer) -> None:
    # A rebinding resolver: loopback (allowed for this test) first, a private address afterwards.
    resolver = MappingResolver({"public.test": [["127.0.0.1"], ["10.9.9.9"]]})
    output = await tool(resolver, test_hosts=["public.test"]).run({"url": f"http://public.test:{server.port}/hello"})
    assert output.value == {
        "url": f"http://public.test:{server.port}/hello",
        "status": 200,
        "content_type": "text/plain; charset=utf-8",
        "content": "hello world",
        "truncated": False,
    }
    assert resolver.lookups == ["public.test"]  # one lookup: no second resolution to connect
    assert server.accepted == 1
    assert server.requests == [("/hello", f"public.test:{server.port}")]


async def test_the_test_allowance_never_covers_ip_literals_or_other_names(server: CountingHTTPServer) -> None:
    allowed = tool(test_hosts=["127.0.0.1", "allowed.test"])
    for url in (f"http://127.0.0.1:{server.port}/hello", f"http://localhost:{server.port}/hello"):
        with pytest.raises(ToolError, match="refused"):
            await allowed.run({"url": url})
    assert server.accepted == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://inside.test:{port}/",
    ],
)
async def test_a_redirect_to_loopback_is_refused(
    server: CountingHTTPServer, other_server: CountingHTTPServer, target: str
) -> None:
    location = target.format(port=other_server.port)
    server.routes["/go"] = lambda h: redirect(h, location)
    resolver = MappingResolver({"public.test": [["127.0.0.1"]], "inside.test": [["127.0.0.1"]]})
    with pytest.raises(ToolError, match="refused"):
        await tool(resolver, test_hosts=["public.test"]).run({"url": f"http://public.test:{server.port}/go"})
    assert server.accepted == 1
    assert other_server.accepted == 0


async def test_allowed_redirects_are_followed_and_bounded(server: CountingHTTPServer) -> None:
    server.routes["/go"] = lambda h: redirect(h, "/hello", 301)
    server.routes["/loop"] = lambda h: redirect(h, "/loop", 307)
    resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
    fetch = tool(resolver, test_hosts=["public.test"], max_redirects=3)
    output = await fetch.run({"url": f"http://public.test:{server.port}/go"})
    assert isinstance(output.value, dict)
    assert (output.value["url"], output.value["content"]) == (f"http://public.test:{server.port}/hello", "hello world")
    with pytest.raises(ToolError, match="too many redirects"):
        await fetch.run({"url": f"http://public.test:{server.port}/loop"})
    assert [path for path, _ in server.requests].count("/loop") == 4  # the first try + 3 redirects


async def test_an_oversized_body_is_truncated(server: CountingHTTPServer) -> None:
    server.routes["/big"] = lambda h: reply(h, 200, b"a" * 300_000)
    resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
    output = await tool(resolver, test_hosts=["public.test"], max_bytes=1024).run(
        {"url": f"http://public.test:{server.port}/big"}
    )
    assert isinstance(output.value, dict)
    assert output.value["truncated"] is True
    assert output.value["content"] == "a" * 1024 + TRUNCATION_MARKER.format(limit=1024)


async def test_a_slow_body_hits_the_time_cap(server: CountingHTTPServer) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"partial")
        handler.wfile.flush()
        server.stopping.wait(10)

    server.routes["/slow"] = slow
    resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
    with pytest.raises(ToolError, match=r"did not finish within 0\.5 seconds"):
        await tool(resolver, test_hosts=["public.test"], timeout_seconds=0.5).run(
            {"url": f"http://public.test:{server.port}/slow"}
        )
    assert server.accepted == 1


async def test_binary_content_is_not_returned(server: CountingHTTPServer) -> None:
    server.routes["/img"] = lambda h: reply(h, 200, b"\x89PNG....", "image/png")
    resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
    output = await tool(resolver, test_hosts=["public.test"]).run({"url": f"http://public.test:{server.port}/img"})
    assert isinstance(output.value, dict)
    assert output.value["content"] == "[binary content of type image/png not shown]"


async def test_the_production_tool_cannot_be_configured_to_reach_loopback(
    server: CountingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TOOLS_HTTP_GET_ALLOW_LOOPBACK", "TOOLS_LOOPBACK_HOSTS_FOR_TESTS", "TOOLS_ALLOW_PRIVATE"):
        monkeypatch.setenv(name, json.dumps(["localhost"]) if "HOSTS" in name else "true")
    assert not any("loopback" in field or "private" in field for field in ToolsSettings.model_fields)
    registry = build_tool_registry(ToolsSettings(plugins_enabled=False))
    http_get = registry.get("http_get")
    assert http_get is not None
    assert http_get.requires_approval is True
    for url in (f"http://127.0.0.1:{server.port}/hello", f"http://localhost:{server.port}/hello"):
        with pytest.raises(ToolError, match="refused"):
            await http_get.run({"url": url})
    assert server.accepted == 0


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    return {name: _self_signed(directory, name) for name in ("public.test", "other.test")}


@pytest.mark.parametrize(("served_name", "works"), [("public.test", True), ("other.test", False)])
async def test_https_connects_to_the_checked_address_and_verifies_the_name(
    certificates: dict[str, tuple[Path, Path]], served_name: str, works: bool
) -> None:
    cert, key = certificates[served_name]
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    srv = CountingHTTPServer(tls=server_tls).start()
    srv.routes["/hello"] = lambda h: reply(h, 200, b"over tls")
    try:
        # The client trusts both test certificates: only the name check can fail.
        client_tls = ssl.create_default_context()
        for trusted, _ in certificates.values():
            client_tls.load_verify_locations(trusted)
        resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
        fetch = HttpGetTool(resolver=resolver, loopback_hosts_for_tests=["public.test"], verify=client_tls)
        url = f"https://public.test:{srv.port}/hello"
        if works:
            output = await fetch.run({"url": url})
            assert isinstance(output.value, dict)
            assert (output.value["status"], output.value["content"]) == (200, "over tls")
            assert srv.requests == [("/hello", f"public.test:{srv.port}")]
        else:
            with pytest.raises(ToolError, match="could not fetch"):
                await fetch.run({"url": url})
            assert srv.requests == []
    finally:
        srv.stop()


async def test_an_unknown_charset_falls_back_to_utf8(server: CountingHTTPServer) -> None:
    server.routes["/odd"] = lambda h: reply(h, 200, "café".encode(), "text/plain; charset=klingon")
    resolver = MappingResolver({"public.test": [["127.0.0.1"]]})
    output = await tool(resolver, test_hosts=["public.test"]).run({"url": f"http://public.test:{server.port}/odd"})
    assert isinstance(output.value, dict)
    assert output.value["content"] == "café"
