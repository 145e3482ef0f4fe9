"""Which network addresses an HTTP target may reach (against SSRF).

A queue's http_target makes the server itself call a URL, with its own network position,
and keep what comes back: without a rule, an admin token (or anyone with the dashboard)
could read the server's loopback services, its pod network, or a cloud metadata service
(169.254.169.254, fd00:ec2::254) through it. So only public unicast addresses are called,
unless --http-allow-cidr lists the networks of internal targets.

The rule is pure and is applied twice: to an IP literal in the URL when UpdateQueue sets
the target (refused at once, FAILED_PRECONDITION), and to every address a host name
resolves to, on every new connection (push/transport.py), after resolution and before the
connect, to the address that is then connected to: a name whose answer changes later (DNS
rebinding) is caught there.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dispatchd.engine.errors import FailedPrecondition

ALLOW_FLAG = "--http-allow-cidr"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# Not covered by ipaddress's is_private in every Python version: IETF protocol assignments
# (192.0.0.192 is a metadata address on some clouds) and the local-use NAT64 prefix.
_SPECIAL = (ipaddress.IPv4Network("192.0.0.0/24"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_kind(ip: IPAddress) -> str | None:
    """Why the server will not call ``ip`` by default ("loopback", "private", ...), or None
    for a public unicast address. An IPv6 address that carries an IPv4 one (mapped, NAT64,
    6to4) is judged by the IPv4 address as well."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = address_kind(embedded)
            if inner is not None or ip.ipv4_mapped is not None:
                return inner
    for kind, applies in _KINDS:
        if applies(ip):
            return kind
    return None


# In this order: the first that applies names the address (link-local before private).
_KINDS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local (cloud metadata services live here)", lambda ip: ip.is_link_local),
    ("multicast", lambda ip: ip.is_multicast),
    ("shared (carrier-grade NAT)", lambda ip: ip.version == 4 and ip in _CGNAT),
    ("special-purpose", lambda ip: any(ip in n for n in _SPECIAL if n.version == ip.version)),
    ("reserved", lambda ip: ip.is_reserved),
    ("private", lambda ip: ip.is_private),
    ("not globally routable", lambda ip: not ip.is_global),
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an IP literal: dotted or bracketed forms, and
    the numeric ones resolvers also take (``2130706433``, ``0x7f.1``, ``127.1``). None for
    a name. No DNS is asked."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if not text or not all(c in "0123456789abcdefxABCDEFX." for c in text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public unicast addresses, and those in ``allowed`` (--http-allow-cidr)."""

    allowed: tuple[IPNetwork, ...] = ()

    @staticmethod
    def of(cidrs: Iterable[str]) -> AddressPolicy:
        """Raises ValueError naming a CIDR that does not parse."""
        nets = []
        for text in cidrs:
            try:
                nets.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"{ALLOW_FLAG}: {text!r} is not a CIDR ({e})") from None
        return AddressPolicy(tuple(nets))

    def refusal(self, ip: IPAddress) -> str | None:
        """None when the server may call ``ip``; else the kind of address it is."""
        kind = address_kind(ip)
        if kind is None:
            return None
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if any(candidate in net for net in self.allowed if net.version == candidate.version):
                return None
        return kind

    def check_url(self, url: str) -> None:
        """Refuses, naming the flag, a URL whose host is an IP literal the server may not
        call. A name passes: where it leads is checked on every connection."""
        host = urlsplit(url).hostname or ""
        ip = literal_address(host)
        if ip is None:
            return
        kind = self.refusal(ip)
        if kind is not None:
            raise FailedPrecondition(forbidden_message(host, ip, kind))


def forbidden_message(host: str, ip: IPAddress, kind: str) -> str:
    where = str(ip) if host.strip("[]") == str(ip) else f"{host} ({ip})"
    return (
        f"http_target: {where} is a {kind} address, which the server does not call "
        f"unless {ALLOW_FLAG} lists its network (e.g. {ALLOW_FLAG} 10.0.0.0/8)"
    )
