"""The upstream HTTP/1.1 client (``proxy.upstream.http1`` and its pool) against a real
socket server that answers with raw bytes: framing, keep-alive and its races, bounds,
deadlines and failures."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.settings import UpstreamTarget
from proxy.upstream.client import UpstreamClient
from proxy.upstream.http1 import (
    MAX_INFLATE,
    READ_HIGH_WATER,
    ConnectFailed,
    ConnectionBroke,
    InvalidRequest,
    Response,
)
from proxy.upstream.pool import ConnectionPool

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
BOMB = gzip.compress(b"\0" * (MAX_INFLATE + 1))  # 16 MiB and a byte of zeros: about 16 KiB
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@dataclass
class RawServer:
    """Counts connections and requests; ``answer`` writes each response."""

    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        return raw

    yield start
    for server in servers:
        server.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def post(pool: ConnectionPool, url: str, total: float = 5.0) -> Response:
    return await pool.request(
        "POST",
        url,
        {"Content-Type": "application/json"},
        b"{}",
        connect_timeout=1,
        total_timeout=total,
    )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold within 2 s")


async def body_of(response: Response) -> bytes:
    parts = []
    while data := await response.read_chunk():
        parts.append(data)
    response.close()
    return b"".join(parts)


async def test_a_chunked_stream_arrives_as_written_and_its_connection_is_reused(serve):
    async def answer(reader, writer, n):
        writer.write(CHUNKED + chunk(b"data: one\n\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(b"data: two\n\n") + b"0\r\n\r\n")

    server = await serve(answer)
    pool = ConnectionPool(10)
    for _ in range(3):
        response = await post(pool, server.url)
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert await response.read_chunk() == b"data: one\n\n"  # before the rest is written
        assert await body_of(response) == b"data: two\n\n"
    assert (server.connections, len(server.requests), pool.opened) == (1, 3, 1)
    head = server.requests[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Content-Length: 2" in head and b"Accept-Encoding: identity" in head
    assert head[1].startswith(b"Host: 127.0.0.1:")
    await pool.close()


async def test_sized_and_close_delimited_bodies(serve):
    async def answer(reader, writer, n):
        if n != 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        else:  # no length, not chunked: the body ends where the connection does
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()

    server = await serve(answer)
    pool = ConnectionPool(10)
    assert await body_of(await post(pool, server.url)) == b"hello"
    assert await body_of(await post(pool, server.url)) == b"until the end"
    assert (server.connections, pool.opened) == (1, 1)
    assert await body_of(await post(pool, server.url)) == b"hello"  # a new connection
    assert (server.connections, pool.opened) == (2, 2)


async def test_a_pooled_connection_the_upstream_closed_is_retried_once_on_a_new_one(serve):
    async def answer(reader, writer, n):
        if n == 2:  # the keep-alive race: the request arrives as the server gives up
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await serve(answer)
    pool = ConnectionPool(10)
    assert await body_of(await post(pool, server.url)) == b"ok"
    assert await body_of(await post(pool, server.url)) == b"ok"
    assert (len(server.requests), server.connections, pool.opened) == (3, 2, 2)


async def test_a_fresh_connection_closed_without_an_answer_fails_without_a_retry(serve):
    async def answer(reader, writer, n):
        writer.close()

    server = await serve(answer)
    with pytest.raises(ConnectionBroke):
        await post(ConnectionPool(10), server.url)
    assert len(server.requests) == 1


async def test_closing_a_response_mid_body_closes_its_connection(serve):
    async def answer(reader, writer, n):
        writer.write(CHUNKED + chunk(b"data: one\n\n"))
        await writer.drain()
        if n == 1:
            await reader.read()  # until the client closes its side
        else:
            writer.write(b"0\r\n\r\n")

    server = await serve(answer)
    pool = ConnectionPool(10)
    response = await post(pool, server.url)
    assert await response.read_chunk() == b"data: one\n\n"
    response.close()
    await until(lambda: server.closed_by_client == 1)
    assert await body_of(await post(pool, server.url)) == b"data: one\n\n"
    assert (server.connections, pool.opened) == (2, 2)


async def test_the_deadline_ends_a_silent_stream(serve):
    async def answer(reader, writer, n):
        writer.write(CHUNKED)
        await asyncio.sleep(5)

    server = await serve(answer)
    pool = ConnectionPool(10)
    response = await post(pool, server.url, total=0.2)
    with pytest.raises(TimeoutError):
        await response.read_chunk()
    response.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",  # too many headers
        b"HTTP/1.1 200 OK\r\nX-A: " + b"b" * 70_000 + b"\r\n\r\n",  # headers too large
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b"
        % (len(BOMB), BOMB),
    ],
    ids=["headers", "header-bytes", "garbage", "encoding", "bomb"],
)
async def test_a_malformed_response_is_a_broken_connection(serve, raw):
    async def answer(reader, writer, n):
        writer.write(raw)

    server = await serve(answer)
    with pytest.raises(ConnectionBroke):
        await body_of(await post(ConnectionPool(10), server.url))  # in the head or the body


async def test_gzip_is_decoded_and_interim_responses_are_skipped(serve):
    packed = gzip.compress(b"data: hello\n\n")

    async def answer(reader, writer, n):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b"
            % (len(packed), packed)
        )

    server = await serve(answer)
    response = await post(ConnectionPool(10), server.url)
    assert response.status == 200
    assert await body_of(response) == b"data: hello\n\n"


async def test_no_connection_is_a_connect_failure():
    pool = ConnectionPool(10)
    with pytest.raises(ConnectFailed):
        await post(pool, "http://127.0.0.1:9/v1/chat/completions")  # discard: nothing listens
    with pytest.raises(InvalidRequest):
        await post(pool, "ftp://127.0.0.1/v1")


@pytest.mark.parametrize(
    "value", ["a\r\nX-Evil: 1", "key-\u2603"], ids=["line-break", "non-latin-1"]
)
async def test_a_header_http_cannot_carry_is_refused_before_anything_is_sent(serve, value):
    server = await serve(lambda *_: asyncio.sleep(0))
    with pytest.raises(InvalidRequest):
        await ConnectionPool(10).request(
            "POST", server.url, {"X-Key": value}, connect_timeout=1, total_timeout=1
        )
    assert server.connections == 0


async def test_the_pool_bounds_exchanges_in_flight(serve):
    release = asyncio.Event()

    async def answer(reader, writer, n):
        writer.write(CHUNKED)
        await writer.drain()
        await release.wait()
        writer.write(b"0\r\n\r\n")

    server = await serve(answer)
    pool = ConnectionPool(2)
    first, second = await post(pool, server.url), await post(pool, server.url)
    third = asyncio.ensure_future(post(pool, server.url))
    await asyncio.sleep(0.1)
    assert not third.done() and len(server.requests) == 2  # waits for a slot
    first.close()  # mid-body: its connection is closed and its slot freed
    response = await asyncio.wait_for(third, 1)
    assert len(server.requests) == 3
    release.set()
    for done in (second, response):
        assert await body_of(done) == b""
    assert pool.opened == 3


async def test_idle_connections_are_closed_after_their_idle_time(serve):
    async def answer(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await serve(answer)
    pool = ConnectionPool(10, idle_seconds=0.1)
    assert await body_of(await post(pool, server.url)) == b"ok"
    await until(lambda: server.closed_by_client == 1)
    assert await body_of(await post(pool, server.url)) == b"ok"
    assert pool.opened == 2


async def test_an_unread_body_stops_the_socket_being_read_and_resumes_it(serve):
    size = 4 * 1024 * 1024

    async def answer(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * size)
        await writer.drain()

    server = await serve(answer)
    response = await post(ConnectionPool(10), server.url)
    await asyncio.sleep(0.3)  # the server writes as fast as it can; nobody reads
    assert response._buffered <= READ_HIGH_WATER + 256 * 1024  # one socket read past it
    assert len(await body_of(response)) == size


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_with_the_upstreams_certificate_checked(tmp_path):
    cert_file, key_file = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)

    async def answer(reader, writer, n):
        writer.write(CHUNKED + chunk(b"data: secret\n\n") + b"0\r\n\r\n")

    raw = RawServer(answer)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        trusting = ConnectionPool(10, tls=ssl.create_default_context(cafile=str(cert_file)))
        for _ in range(2):
            assert await body_of(await post(trusting, url)) == b"data: secret\n\n"
        assert trusting.opened == 1
        assert raw.requests[0].split(b"\r\n")[1] == f"Host: {url.split('/')[2]}".encode()
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await post(ConnectionPool(10), url)  # the system's roots do not know it
    finally:
        server.close()


async def test_after_done_the_connection_waits_for_the_bodys_end_and_is_reused(serve):
    ended = asyncio.Event()

    async def answer(reader, writer, n):
        writer.write(CHUNKED + chunk(b"data: [DONE]\n\n"))
        await writer.drain()
        await asyncio.sleep(0.05)  # the last chunk in a read of its own, as over TLS
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        ended.set()

    server = await serve(answer)
    pool = ConnectionPool(10)
    response = await post(pool, server.url)
    assert await response.read_chunk() == b"data: [DONE]\n\n"
    response.close_after_end(grace=2.0)
    await ended.wait()
    await asyncio.sleep(0.02)
    assert await body_of(await post(pool, server.url)) == b"data: [DONE]\n\n"
    assert (server.connections, pool.opened, server.closed_by_client) == (1, 1, 0)


async def test_after_done_a_body_that_never_ends_is_closed_after_the_grace(serve):
    async def answer(reader, writer, n):
        writer.write(CHUNKED + chunk(b"data: [DONE]\n\n"))
        await writer.drain()
        await reader.read()  # never ends the body; waits for the client to close

    server = await serve(answer)
    pool = ConnectionPool(10)
    response = await post(pool, server.url)
    assert await response.read_chunk() == b"data: [DONE]\n\n"
    response.close_after_end(grace=0.1)
    await asyncio.sleep(0.05)
    assert server.closed_by_client == 0  # still waiting for the end
    await until(lambda: server.closed_by_client == 1)


def sse_target(url: str) -> UpstreamTarget:
    return UpstreamTarget(base_url=url.removesuffix("/chat/completions"), api_key="k")


@pytest.mark.parametrize("heard_done", [True, False], ids=["after-done", "barge-in"])
async def test_a_closed_upstream_stream_reuses_its_connection_only_after_done(serve, heard_done):
    async def answer(reader, writer, n):
        event = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        writer.write(CHUNKED + chunk(event))
        await writer.drain()
        if heard_done or n > 1:
            writer.write(chunk(b"data: [DONE]\n\n"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
        else:
            await reader.read()  # still generating when the caller leaves

    server = await serve(answer)
    client = UpstreamClient(max_connections=10)
    await client.start()
    target = sse_target(server.url)
    stream = await client.open_stream(target, b"{}")
    events = list(stream.first_events)
    assert events[0] == b'{"choices":[{"index":0,"delta":{"content":"Hi"}}]}'
    if heard_done and events[-1] != b"[DONE]":
        batches = stream.batches()
        async for batch in batches:  # as the relay reads: up to [DONE], not the end
            events += batch
            if batch[-1] == b"[DONE]":
                break
        await batches.aclose()
    assert (events[-1] == b"[DONE]") is heard_done
    stream.close()
    if heard_done:
        await asyncio.sleep(0.1)  # the body's end arrives
    else:
        await until(lambda: server.closed_by_client == 1)  # the upstream stops at once
    second = await client.open_stream(target, b"{}")
    second.close()
    assert client.pool.opened == (1 if heard_done else 2)
    await client.close()
