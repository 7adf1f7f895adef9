"""SSRF guard: non-public addresses are refused however they are spelled.

Only loopback names and literal addresses are resolved here (no DNS traffic); names
that would need DNS are answered by a patched ``socket.getaddrinfo``.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from proxy.net.guard import (
    BlockedURL,
    GuardedResolver,
    UnresolvedHost,
    check_url,
    is_public,
    precheck_url,
)

NON_PUBLIC = [
    "http://127.0.0.1/",
    "http://127.1.2.3:8080/x",
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/",  # CGNAT
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/",  # 6to4 of loopback
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # ... in hex
    "http://0177.0.0.1/",  # ... in octal
    "http://0x7f.1/",
    "http://localhost:9/",  # a name resolving to loopback
    "https://LOCALHOST/",
]


@pytest.fixture
def no_dns(monkeypatch):
    """Fail the test if anything resolves a name or opens a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected network use: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def fake_dns(monkeypatch):
    """``socket.getaddrinfo`` answering from a table (unknown names do not resolve)."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in table:
            if host == "localhost" or host.replace(".", "").isdigit():
                return real(host, port, family, type, proto, flags)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos = []
        for address in table[host]:
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize("url", NON_PUBLIC)
async def test_non_public_addresses_are_blocked(url):
    with pytest.raises(BlockedURL):
        await check_url(url, allow_private=False)


# Link-local and metadata addresses: refused even for a tool on the operator's network.
METADATA = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.0.23/",  # Tencent Cloud's metadata service
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud
    "http://[fd00:ec2::254]/",  # AWS over IPv6
]


@pytest.mark.parametrize("url", [url for url in NON_PUBLIC if url not in METADATA])
async def test_private_addresses_pass_when_allowed_without_any_lookup(url, no_dns):
    checked = await check_url(url, allow_private=True)
    assert checked.addresses == ()


@pytest.mark.parametrize("url", METADATA)
async def test_metadata_addresses_are_blocked_even_when_private_is_allowed(url, no_dns):
    for allow_private in (False, True):
        with pytest.raises(BlockedURL):
            await check_url(url, allow_private=allow_private)


async def test_the_private_resolver_refuses_only_metadata_addresses(fake_dns):
    fake_dns["internal.example"] = ["10.1.2.3"]
    fake_dns["metadata.example"] = ["10.1.2.3", "169.254.169.254"]
    resolver = GuardedResolver(allow_private=True)
    try:
        results = await resolver.resolve("internal.example", 80)
        assert [r["host"] for r in results] == ["10.1.2.3"]
        with pytest.raises(BlockedURL):
            await resolver.resolve("metadata.example", 80)
    finally:
        await resolver.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:password@93.184.216.34/",
        "http://user@93.184.216.34/",
        "http://:secret@93.184.216.34/",
        "http:///no-host",
        "/relative/path",
        "not a url",
        "http://93.184.216.34:99999/",
        "http://evil.example\\@127.0.0.1/",
    ],
)
async def test_bad_urls_are_refused_even_when_private_is_allowed(url, no_dns):
    for allow_private in (False, True):
        with pytest.raises(BlockedURL):
            await check_url(url, allow_private=allow_private)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://93.184.216.34/tool", "93.184.216.34"),
        ("https://93.184.216.34:8443/", "93.184.216.34"),
        ("https://[2606:2800:220:1:248:1893:25c8:1946]/", "2606:2800:220:1:248:1893:25c8:1946"),
        ("http://[::ffff:93.184.216.34]/", "::ffff:93.184.216.34"),
    ],
)
async def test_public_literal_addresses_pass_without_any_lookup(url, address, no_dns):
    checked = await check_url(url, allow_private=False)
    assert checked.addresses == (ipaddress.ip_address(address),)
    assert checked.host == str(ipaddress.ip_address(address))


async def test_a_name_passes_only_when_every_address_is_public(fake_dns):
    fake_dns["tools.example"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    fake_dns["mixed.example"] = ["93.184.216.34", "10.0.0.1"]
    fake_dns["metadata.example"] = ["169.254.169.254"]

    checked = await check_url("https://tools.example/api", allow_private=False)
    assert checked.host == "tools.example" and checked.port == 443
    assert [str(ip) for ip in checked.addresses] == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]
    with pytest.raises(BlockedURL, match=re.escape("10.0.0.1")):
        await check_url("https://mixed.example/api", allow_private=False)
    with pytest.raises(BlockedURL, match=re.escape("169.254.169.254")):
        await check_url("http://metadata.example/", allow_private=False)
    with pytest.raises(UnresolvedHost):
        await check_url("http://nowhere.example/", allow_private=False)


def test_precheck_judges_literal_addresses_and_leaves_names_to_the_resolver():
    assert precheck_url("http://tools.example/x", allow_private=False).addresses == ()
    with pytest.raises(BlockedURL):
        precheck_url("http://[::ffff:10.1.2.3]/", allow_private=False)
    assert precheck_url("http://10.1.2.3/", allow_private=True).port == 80


async def test_the_resolver_refuses_names_that_resolve_to_private_addresses(fake_dns):
    fake_dns["rebound.example"] = ["127.0.0.1"]
    fake_dns["tools.example"] = ["93.184.216.34"]
    resolver = GuardedResolver()
    try:
        with pytest.raises(BlockedURL):
            await resolver.resolve("rebound.example", 80)
        with pytest.raises(BlockedURL):
            await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
        with pytest.raises(UnresolvedHost):
            await resolver.resolve("nowhere.example", 80)
        results = await resolver.resolve("tools.example", 443)
        assert [r["host"] for r in results] == ["93.184.216.34"]
    finally:
        await resolver.close()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("100.127.255.255", False),
        ("100.128.0.1", True),
        ("198.18.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::ffff:192.168.0.1", False),
    ],
)
def test_is_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public
