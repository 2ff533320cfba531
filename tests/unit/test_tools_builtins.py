"""current_time, and the pure SSRF rules of http_get (address classification, URL parsing)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from app.application.tools import ToolError
from app.infrastructure.tools.current_time import CurrentTimeTool
from app.infrastructure.tools.http_get import address_refusal, parse_target

FIXED = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


async def test_current_time_defaults_to_utc() -> None:
    output = await CurrentTimeTool(lambda: FIXED).run({})
    assert output.value == {
        "timezone": "UTC",
        "iso": "2026-07-01T12:00:00+00:00",
        "unix": int(FIXED.timestamp()),
        "weekday": "Wednesday",
        "utc_offset": "+0000",
        "utc_offset_seconds": 0,
    }


async def test_current_time_in_a_zone() -> None:
    output = await CurrentTimeTool(lambda: FIXED).run({"timezone": "Europe/Paris"})
    assert isinstance(output.value, dict)
    assert output.value["iso"] == "2026-07-01T14:00:00+02:00"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/"])
async def test_current_time_refuses_unknown_zones(zone: str) -> None:
    with pytest.raises(ToolError, match="unknown time zone"):
        await CurrentTimeTool(lambda: FIXED).run({"timezone": zone})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",  # noqa: S104 - an address to refuse, not a bind
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "::127.0.0.1",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b::7f00:1",
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_loopback_allowance_is_only_loopback() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) is not None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow_loopback=True) is not None


def test_parse_target_normalises_hosts() -> None:
    target = parse_target("HTTP://Example.COM./a%20b?q=1#frag")
    assert (target.scheme, target.host, target.port, target.host_header) == ("http", "example.com", 80, "example.com")
    assert target.raw_path == b"/a%20b?q=1"
    assert parse_target("https://[::1]:8443/").host_header == "[::1]:8443"
    assert parse_target("http://ⓛocalhost/").host == "localhost"
    assert parse_target("http://127。0。0。1/").host == "127.0.0.1"
    assert parse_target("http://bücher.example/").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com\\@127.0.0.1/", "backslashes"),
        ("http://exa mple.com/", "whitespace"),
        ("http:///path", "no host"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://example.com:99999/", "not valid"),
        ("http://" + "a" * 3000 + ".com/", "too long"),
    ],
)
def test_parse_target_refuses_ambiguous_urls(url: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        parse_target(url)
