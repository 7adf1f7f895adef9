"""SSRF protection for URLs the proxy calls on an operator's (and a model's) behalf.

A URL may be called when it is http(s), carries no credentials, and every address
its host resolves to is public: not loopback, private (RFC 1918, fc00::/7),
link-local (169.254/16 with the cloud metadata address, fe80::/10), CGNAT
(100.64/10), multicast, unspecified or reserved. IPv6 forms that embed an IPv4
address (mapped ``::ffff:a.b.c.d``, 6to4, NAT64) are judged by that address.
Hosts are judged by what ``ipaddress`` and ``getaddrinfo`` make of them, never by
how the string looks, so ``http://2130706433/``, ``0x7f.1`` and ``0177.0.0.1``
are caught as 127.0.0.1. URLs are parsed with yarl, the parser aiohttp connects
with, so the host checked is the host connected to.

DNS rebinding: a name can resolve to a public address when checked and to a
private one a moment later when connecting. ``check_url`` alone cannot prevent
that; ``GuardedResolver`` does: an aiohttp connector built with it judges the
very addresses it connects to (and caches them, so the hot path resolves a name
once per cache period, not twice per call). Literal IP hosts never reach a
resolver (aiohttp connects to them directly) and cannot rebind: ``precheck_url``
judges those. A redirect would dodge both, so callers must not follow redirects.

``allow_private`` (a tool on the operator's own network) opens private and loopback
addresses, never link-local ones (169.254/16, fe80::/10) or the other clouds' metadata
addresses: those hand out instance credentials and are never a tool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = IPv4Address | IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Metadata services outside link-local: Alibaba Cloud, and AWS over IPv6.
_METADATA = {IPv4Address("100.100.100.200"), IPv6Address("fd00:ec2::254")}


class BlockedURL(ValueError):
    """The URL may not be called: scheme, credentials, or a non-public address."""


class UnresolvedHost(BlockedURL):
    """The host name does not resolve: nothing could be checked, so nothing is called."""


@dataclass(frozen=True, slots=True)
class CheckedURL:
    url: URL  # pass this (not the original string) to aiohttp
    host: str
    port: int
    # The addresses judged: every resolved one for ``check_url``; for ``precheck_url``
    # the literal IP, or empty for a name. Empty too when private addresses are allowed.
    addresses: tuple[IPAddress, ...]


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
    elif ip in _CGNAT:
        return False
    # ``is_global`` alone has changed between Python releases: spell every class out too.
    return ip.is_global and not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


def is_metadata(ip: IPAddress) -> bool:
    """Link-local or a cloud metadata address: refused even where private ones are allowed."""
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_metadata(inner)
    return ip.is_link_local or ip in _METADATA


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _judge(host: str, addresses: tuple[IPAddress, ...], *, allow_private: bool = False) -> None:
    for ip in addresses:
        if allow_private and is_metadata(ip):
            what = "a link-local or cloud metadata address"
        elif not allow_private and not is_public(ip):
            what = "a non-public address"
        else:
            continue
        if _literal_ip(host) is not None:
            raise BlockedURL(f"{host} is {what}")
        raise BlockedURL(f"{host} resolves to {what} ({ip})")


def precheck_url(url: str, *, allow_private: bool) -> CheckedURL:
    """Everything that needs no DNS: scheme, credentials, and a literal IP host."""
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise BlockedURL(f"not a valid URL: {exc}") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or not parsed.is_absolute():
        raise BlockedURL("only absolute http and https URLs may be called")
    if parsed.user is not None or parsed.password is not None or "@" in (parsed.raw_authority):
        raise BlockedURL("credentials in the URL are not allowed")
    host = parsed.host
    if not host:
        raise BlockedURL("the URL has no host")
    port = port or _DEFAULT_PORTS[scheme]
    literal = _literal_ip(host)
    addresses = (literal,) if literal is not None else ()
    _judge(host, addresses, allow_private=allow_private)
    return CheckedURL(parsed, host, port, () if allow_private else addresses)


async def resolve_host(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to (a literal IP is returned without any lookup)."""
    literal = _literal_ip(host)
    if literal is not None:
        return (literal,)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnresolvedHost(f"host {host} does not resolve") from None
    addresses: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses[ipaddress.ip_address(str(sockaddr[0]))] = None
    if not addresses:
        raise UnresolvedHost(f"host {host} has no IP address")
    return tuple(addresses)


async def check_url(url: str, *, allow_private: bool) -> CheckedURL:
    """Raise ``BlockedURL`` unless ``url`` may be called; returns the addresses judged.

    With ``allow_private`` a name is not looked up (only a literal IP is judged; the
    connector's ``GuardedResolver(allow_private=True)`` judges names). The answer holds
    for this lookup only (see DNS rebinding in the module notes): to connect, use a
    ``GuardedResolver`` or connect to ``addresses`` yourself.
    """
    checked = precheck_url(url, allow_private=allow_private)
    if allow_private or checked.addresses:
        return checked
    addresses = await resolve_host(checked.host, checked.port)
    _judge(checked.host, addresses)
    return CheckedURL(checked.url, checked.host, checked.port, addresses)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to any non-public address.

    ``TCPConnector(resolver=GuardedResolver())``: the addresses judged are the ones
    connected to, which defeats DNS rebinding for that connector. With ``allow_private``
    only link-local and metadata addresses are refused.
    """

    def __init__(self, *, allow_private: bool = False) -> None:
        self._inner: ThreadedResolver | None = None
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        try:
            results = await self._inner.resolve(host, port, family)
        except OSError:
            raise UnresolvedHost(f"host {host} does not resolve") from None
        addresses = tuple(ipaddress.ip_address(r["host"]) for r in results)
        _judge(host, addresses, allow_private=self._allow_private)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
