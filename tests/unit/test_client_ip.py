"""X-Forwarded-For is believed only from the configured proxies."""

from __future__ import annotations

import pytest

from app.application.ratelimit import client_ip, parse_trusted_proxies

PROXIES = parse_trusted_proxies(["10.0.0.0/8", "fd00::/8", "192.168.1.5"])


def test_direct_clients_cannot_spoof_their_address() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", PROXIES) == "203.0.113.9"


def test_no_header_from_a_proxy_means_the_proxy_itself() -> None:
    assert client_ip("10.1.1.1", None, PROXIES) == "10.1.1.1"


def test_the_first_untrusted_hop_from_the_right_is_the_client() -> None:
    # the client wrote a fake first entry; our two proxies appended what they saw
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", PROXIES) == "198.51.100.7"


def test_several_header_lines_count_as_one_list() -> None:
    assert client_ip("10.0.0.2", ["6.6.6.6", "198.51.100.7, 10.0.0.1"], PROXIES) == "198.51.100.7"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert client_ip("10.0.0.2", "10.9.9.9, 192.168.1.5", PROXIES) == "10.9.9.9"


def test_a_malformed_hop_stops_at_the_last_address_we_can_vouch_for() -> None:
    assert client_ip("10.0.0.2", "198.51.100.7, garbage", PROXIES) == "10.0.0.2"


def test_ports_brackets_and_mapped_addresses_are_normalised() -> None:
    assert client_ip("::ffff:10.0.0.2", "198.51.100.7:5555", PROXIES) == "198.51.100.7"
    assert client_ip("fd00::1", "[2001:db8::1]:443", PROXIES) == "2001:db8::1"
    assert client_ip("fd00::1", "2001:db8::2", PROXIES) == "2001:db8::2"


def test_nothing_is_trusted_by_default() -> None:
    assert client_ip("10.0.0.2", "198.51.100.7", ()) == "10.0.0.2"


def test_invalid_proxy_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        parse_trusted_proxies(["10.0.0.0/8", "not-an-ip"])
