"""Which address a request really comes from, trusting ``X-Forwarded-For`` only from our proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) of the proxies allowed to set ``X-Forwarded-For``.

    Raises ValueError on anything that is not an address or a network.
    """
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in cidrs if item.strip())


def _parse(value: str) -> IPAddress | None:
    """An address out of one hop: tolerates ``[v6]:port``, ``v4:port`` and IPv4-mapped IPv6."""
    text = value.strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4 with a port; a bare v6 address has several colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_ip(peer: str | None, forwarded_for: Sequence[str] | str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's address.

    ``peer`` is the socket's remote address. Unless it is a trusted proxy, it is the answer
    and ``X-Forwarded-For`` is ignored (anyone can write that header). From a trusted proxy,
    the hops are read right to left (each proxy appends the address it saw) and the first
    one that is not itself a trusted proxy is the client. A malformed hop ends the walk at
    the last address we could vouch for. Several header lines count as one list.
    """
    peer_address = _parse(peer) if peer else None
    if peer_address is None:
        return peer or "unknown"
    if not forwarded_for or not _trusted(peer_address, trusted):
        return str(peer_address)
    lines = [forwarded_for] if isinstance(forwarded_for, str) else list(forwarded_for)
    hops = [hop for line in lines for hop in line.split(",") if hop.strip()]
    current = peer_address
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return str(current)
        current = address
        if not _trusted(address, trusted):
            return str(address)
    return str(current)
