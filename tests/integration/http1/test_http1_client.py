"""The native HTTP/1.1 client (`app.infrastructure.llm.http1`) against real servers on loopback.

Each server is a raw asyncio server in the test's loop (tests/support/raw_upstream.py) that
writes exactly the bytes a test needs: valid answers split at awkward places, garbage,
resets, early closes. Nothing about sockets is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.infrastructure.llm import http1
from app.infrastructure.llm.http1 import (
    Http1Client,
    Http1ConnectError,
    Http1PoolTimeout,
    Http1ProtocolError,
    Http1ReadError,
    Http1Response,
)
from app.infrastructure.persistence.embedded import free_port
from tests.support.raw_upstream import RawUpstream, chunked, header_of, keep_alive, ok

BODY = b'{"model": "m", "messages": []}'


def client(**options: Any) -> Http1Client:
    return Http1Client(headers={"Authorization": "Bearer sk-test", "Accept": "application/json"}, **options)


@contextlib.asynccontextmanager
async def open_client(**options: Any) -> AsyncIterator[Http1Client]:
    """`client`, closed (every pooled connection) when the block ends."""
    llm = client(**options)
    try:
        yield llm
    finally:
        await llm.aclose()


async def post_and_read(llm: Http1Client, url: str, body: bytes = BODY) -> tuple[Http1Response, bytes]:
    # Bounded: a client bug must fail the test, not hang it.
    async with asyncio.timeout(5):
        response = await llm.post(url, body)
        data = await response.aread()
    await response.aclose()
    return response, data


# -- requests and keep-alive ----------------------------------------------------------------


async def test_sequential_requests_share_one_connection_and_send_the_expected_request() -> None:
    async with RawUpstream(keep_alive(lambda head, body: ok(b"answer:" + body))) as server, open_client() as llm:
        for n in range(5):
            response, data = await post_and_read(llm, server.url, b'{"n": %d}' % n)
            assert response.status_code == 200
            assert data == b'answer:{"n": %d}' % n
    assert server.connections == 1
    head, _ = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert header_of(head, "host") == f"127.0.0.1:{server.port}"
    assert header_of(head, "content-length") == str(len(b'{"n": 0}'))
    assert header_of(head, "authorization") == "Bearer sk-test"
    assert header_of(head, "accept") == "application/json"
    assert header_of(head, "content-type") == "application/json"
    assert header_of(head, "accept-encoding") == "identity"
    assert header_of(head, "user-agent") == http1.USER_AGENT


async def test_headers_are_looked_up_case_insensitively() -> None:
    extra = b"Retry-After: 3\r\nretry-after-ms: 2500\r\nX-Thing: a\r\n"
    async with RawUpstream(keep_alive(lambda head, body: ok(extra=extra))) as server, open_client() as llm:
        response, _ = await post_and_read(llm, server.url)
    assert response.header("retry-after") == "3"
    assert response.header("RETRY-AFTER-MS") == "2500"
    assert response.header("content-type") == "application/json"
    assert response.header("x-missing") is None
    assert ("X-Thing", "a") in response.headers


async def test_a_request_on_a_reused_connection_starts_no_task() -> None:
    async with (
        RawUpstream(keep_alive(lambda head, body: chunked(b"data: 1\n\n", b"data: 2\n\n"))) as server,
        open_client() as llm,
    ):
        await post_and_read(llm, server.url)  # opens the connection (the server's task starts here)
        loop = asyncio.get_running_loop()
        created: list[object] = []
        factory = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
            created.append(coro)
            if factory is not None:
                return factory(loop, coro, **kwargs)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(counting)
        try:
            for _ in range(3):
                _, data = await post_and_read(llm, server.url)
                assert data == b"data: 1\n\ndata: 2\n\n"
        finally:
            loop.set_task_factory(factory)
    assert created == []
    assert server.connections == 1


async def test_connection_close_and_http_1_0_answers_are_not_reused() -> None:
    answers = [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    ]

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(answers[(n - 1) % 3])
            await writer.drain()
            await server.client_gone(reader)

    async with RawUpstream(handler) as server, open_client() as llm:
        for _ in range(3):
            _, data = await post_and_read(llm, server.url)
            assert data
    assert server.connections == 3


# -- the pool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2])
async def test_the_pool_limit_holds_and_waiting_requests_are_served_in_arrival_order(limit: int) -> None:
    release = asyncio.Event()
    order: list[bytes] = []

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while data := await server.serve(reader, lambda head, body: body):
            order.append(data)
            await release.wait()
            writer.write(ok(data))
            await writer.drain()

    async with RawUpstream(handler) as server, open_client(max_connections=limit, connect_timeout=5) as llm:
        tasks = []
        for n in range(6):
            tasks.append(asyncio.ensure_future(post_and_read(llm, server.url, b"%d" % n)))
            await asyncio.sleep(0.02)  # arrival order is the order of the list
        assert server.connections == limit
        assert order == [b"%d" % n for n in range(limit)]
        release.set()
        results = await asyncio.gather(*tasks)
    assert [data for _, data in results] == [b"%d" % n for n in range(6)]
    assert server.connections == limit
    if limit == 1:
        assert order == [b"%d" % n for n in range(6)]  # first come, first served
    else:
        assert sorted(order) == [b"%d" % n for n in range(6)]


async def test_idle_connections_are_reused_newest_first() -> None:
    gates = {1: asyncio.Event(), 2: asyncio.Event()}

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        first = True
        while await server.serve(reader, lambda h, b: b"x"):
            if first and n in gates:
                await gates[n].wait()
            first = False
            writer.write(ok(b"conn-%d" % n))
            await writer.drain()

    async with RawUpstream(handler) as server, open_client() as llm:
        one = asyncio.ensure_future(post_and_read(llm, server.url))
        await asyncio.sleep(0.02)
        two = asyncio.ensure_future(post_and_read(llm, server.url))
        await asyncio.sleep(0.02)
        gates[1].set()
        assert (await one)[1] == b"conn-1"
        gates[2].set()
        assert (await two)[1] == b"conn-2"  # released last
        assert (await post_and_read(llm, server.url))[1] == b"conn-2"
        assert (await post_and_read(llm, server.url))[1] == b"conn-2"
    assert server.connections == 2


async def test_a_request_waiting_longer_than_the_pool_timeout_fails() -> None:
    hold = asyncio.Event()

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await server.serve(reader, lambda h, b: b"x")
            await hold.wait()  # never answers
            return
        while data := await server.serve(reader, lambda h, b: ok()):
            writer.write(data)
            await writer.drain()

    async with RawUpstream(handler) as server:
        llm = client(max_connections=1, connect_timeout=5, pool_timeout=0.2)
        try:
            first = asyncio.ensure_future(llm.post(server.url, BODY))
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(Http1PoolTimeout):
                await llm.post(server.url, BODY)
            assert 0.15 <= loop.time() - started < 1.0
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            # The cancelled request closed its connection and freed its place at once.
            async with asyncio.timeout(1):
                response, _ = await post_and_read(llm, server.url)
            assert response.status_code == 200
        finally:
            hold.set()
            await llm.aclose()
    assert server.connections == 2


async def test_an_idle_connection_older_than_keepalive_is_closed_not_reused() -> None:
    async with (
        RawUpstream(keep_alive(lambda head, body: ok())) as server,
        open_client(keepalive_seconds=0.1) as llm,
    ):
        await post_and_read(llm, server.url)
        await asyncio.sleep(0.25)
        await post_and_read(llm, server.url)
        await asyncio.sleep(0.05)
    assert server.connections == 2
    assert server.closed_by_client >= 1  # the expired one was closed by the client


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if data := await server.serve(reader, lambda h, b: ok()):
            writer.write(data)
            await writer.drain()
            writer.close()  # keep-alive announced, then closed while idle

    async with RawUpstream(handler) as server, open_client() as llm:
        await post_and_read(llm, server.url)
        await asyncio.sleep(0.1)  # the client sees the EOF while the connection is idle
        pool = llm.pool_of(server.url)
        assert pool.idle_count == 0
        _, data = await post_and_read(llm, server.url)
    assert data == b'{"ok": true}'
    assert server.connections == 2
    assert len(server.requests) == 2  # never sent on the closed connection


async def test_a_reused_connection_closed_as_the_request_is_sent_is_retried_once_on_a_new_one() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(await server.serve(reader, lambda h, b: ok(b"first")))
            await writer.drain()
            await server.serve(reader, lambda h, b: b"x")  # the second request: closed unanswered
            return
        while data := await server.serve(reader, lambda h, b: ok(b"retried")):
            writer.write(data)
            await writer.drain()

    async with RawUpstream(handler) as server, open_client() as llm:
        assert (await post_and_read(llm, server.url))[1] == b"first"
        assert (await post_and_read(llm, server.url))[1] == b"retried"
    assert server.connections == 2
    assert len(server.requests) == 3  # first, second (closed unanswered), second again


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.serve(reader, lambda h, b: b"x")

    async with RawUpstream(handler) as server, open_client() as llm:
        with pytest.raises(Http1ReadError):
            await llm.post(server.url, BODY)
    assert server.connections == 1


async def test_a_connection_refused_is_a_connect_error() -> None:
    async with open_client(connect_timeout=2) as llm:
        with pytest.raises(Http1ConnectError) as caught:
            await llm.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", BODY)
    assert isinstance(caught.value.__cause__, OSError)


async def test_aclose_closes_idle_and_busy_connections() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        # Quick answers complete; a slow one sends its head and first chunk, then nothing.
        while data := await server.serve(reader, lambda h, b: ok() if b == b"quick" else chunked(b"x")[:-5]):
            writer.write(data)
            await writer.drain()

    async with RawUpstream(handler) as server:
        llm = client()
        busy = await llm.post(server.url, b"slow")
        await post_and_read(llm, server.url, b"quick")  # a second connection, then idle
        assert server.connections == 2
        await llm.aclose()
        await asyncio.sleep(0.1)
        assert server.closed_by_client == 2
        with pytest.raises(Http1ReadError):
            await busy.aread()
        with pytest.raises(Http1ConnectError):
            await llm.post(server.url, BODY)


async def test_bytes_arriving_on_an_idle_connection_make_it_unusable() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while data := await server.serve(reader, lambda h, b: ok()):
            writer.write(data)
            await writer.drain()
            if n == 1:
                writer.write(b"HTTP/1.1 200 OK\r\n")  # unsolicited

    async with RawUpstream(handler) as server, open_client() as llm:
        await post_and_read(llm, server.url)
        await asyncio.sleep(0.05)
        _, data = await post_and_read(llm, server.url)
    assert data == b'{"ok": true}'
    assert server.connections == 2


# -- bodies -----------------------------------------------------------------------------------


def _split_server(answer: bytes) -> tuple[list[int], Any]:
    """A keep-alive handler sending `answer` in two writes, split at the next position each time."""
    cuts = list(range(1, len(answer)))
    served: list[int] = []

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while await server.serve(reader, lambda h, b: b"x"):
            cut = cuts[len(served) % len(cuts)]
            served.append(cut)
            writer.write(answer[:cut])
            await writer.drain()
            await asyncio.sleep(0.002)  # a separate read on the client's side
            writer.write(answer[cut:])
            await writer.drain()

    return cuts, handler


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (chunked(b"data: a\n\n", b"data: bb\n\n", b"data: [DONE]\n\n"), b"data: a\n\ndata: bb\n\ndata: [DONE]\n\n"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
            b"abcde",
        ),
        (ok(b"0123456789"), b"0123456789"),
    ],
    ids=["chunked", "chunked-extensions-trailers", "content-length"],
)
async def test_an_answer_split_at_every_position_parses_the_same(answer: bytes, body: bytes) -> None:
    cuts, handler = _split_server(answer)
    async with RawUpstream(handler) as server, open_client() as llm:
        for _ in cuts:
            response, data = await post_and_read(llm, server.url)
            assert (response.status_code, data) == (200, body)
    assert server.connections == 1  # every answer ended cleanly: the connection served them all


async def test_an_answer_sent_byte_by_byte_parses() -> None:
    answer = chunked(b"data: 1\n\n", b"data: 2\n\n")

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while await server.serve(reader, lambda h, b: b"x"):
            for i in range(len(answer)):
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)

    async with RawUpstream(handler) as server, open_client() as llm:
        _, data = await post_and_read(llm, server.url)
        _, again = await post_and_read(llm, server.url)
    assert data == again == b"data: 1\n\ndata: 2\n\n"
    assert server.connections == 1


async def test_events_of_one_network_read_come_out_as_one_piece() -> None:
    events = [b"data: %d\n\n" % n for n in range(20)]
    async with RawUpstream(keep_alive(lambda h, b: chunked(*events))) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        await asyncio.sleep(0.05)  # everything arrived
        pieces = []
        while piece := await response.read():
            pieces.append(piece)
        await response.aclose()
    assert pieces == [b"".join(events)]


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"data: 2\n\n")
            await writer.drain()
            writer.close()

    async with RawUpstream(handler) as server, open_client() as llm:
        _, first = await post_and_read(llm, server.url)
        _, second = await post_and_read(llm, server.url)
    assert first == second == b"data: 1\n\ndata: 2\n\n"
    assert server.connections == 2  # never reused


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_compressed_bodies_are_decoded(encoding: bytes, compress: Any) -> None:
    plain = b"data: " + b"x" * 5000 + b"\n\n"
    packed = compress(plain)
    third = len(packed) // 3
    pieces = (packed[:third], packed[third : 2 * third], packed[2 * third :])
    answer = chunked(*pieces, extra=b"Content-Encoding: %s\r\n" % encoding)
    async with RawUpstream(keep_alive(lambda h, b: answer)) as server, open_client() as llm:
        _, data = await post_and_read(llm, server.url)
        _, again = await post_and_read(llm, server.url)
    assert data == again == plain
    assert server.connections == 1


async def test_a_body_that_does_not_decompress_is_a_protocol_error() -> None:
    answer = ok(b"not gzip at all", extra=b"Content-Encoding: gzip\r\n")
    async with RawUpstream(keep_alive(lambda h, b: answer)) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        with pytest.raises(Http1ProtocolError):
            await response.aread()


async def test_an_encoding_we_cannot_decode_is_a_protocol_error() -> None:
    answer = ok(b"\x8b\x00", extra=b"Content-Encoding: br\r\n")
    async with RawUpstream(keep_alive(lambda h, b: answer)) as server, open_client() as llm:
        with pytest.raises(Http1ProtocolError):
            await llm.post(server.url, BODY)


async def test_interim_1xx_answers_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    async with (
        RawUpstream(keep_alive(lambda h, b: interim + ok(b"final", extra=b"X-Final: yes\r\n"))) as server,
        open_client() as llm,
    ):
        response, data = await post_and_read(llm, server.url)
        _, again = await post_and_read(llm, server.url)
    assert (response.status_code, data, again) == (200, b"final", b"final")
    assert response.header("x-final") == "yes"
    assert response.header("link") is None
    assert server.connections == 1


async def test_error_statuses_are_answers_too() -> None:
    answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}"
    async with RawUpstream(keep_alive(lambda h, b: answer)) as server, open_client() as llm:
        response, data = await post_and_read(llm, server.url)
    assert (response.status_code, response.header("retry-after"), data) == (429, "1", b"{}")


@pytest.mark.parametrize(
    "garbage",
    [b"garbage\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00"],
    ids=["words", "ssh", "bad-status", "tls-hello"],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error_without_waiting(garbage: bytes) -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(garbage)
            await writer.drain()
            await server.client_gone(reader, seconds=5)  # keeps the connection open: no EOF to rely on

    async with RawUpstream(handler) as server, open_client() as llm:
        async with asyncio.timeout(2):
            with pytest.raises(Http1ProtocolError):
                await llm.post(server.url, BODY)


async def test_a_head_larger_than_allowed_is_a_protocol_error() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(2000):
                writer.write(b"X-Padding: " + b"p" * 100 + b"\r\n")
            await writer.drain()
            await server.client_gone(reader, seconds=5)

    async with RawUpstream(handler) as server, open_client() as llm:
        with pytest.raises(Http1ProtocolError):
            await llm.post(server.url, BODY)


async def test_a_reset_mid_body_is_a_read_error_after_what_arrived() -> None:
    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()
            await asyncio.sleep(0.05)
            # SO_LINGER 0: closing sends a TCP reset, not a FIN.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async with RawUpstream(handler) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        assert await response.read() == b"partial"
        with pytest.raises(Http1ReadError):
            await response.read()
        assert llm.pool_of(server.url).connections == set()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_a_clean_close_mid_body_is_a_read_error(framing: str) -> None:
    head = (
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        if framing == "chunked"
        else b"Content-Length: 50\r\n\r\nhello"
    )

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\n" + head)
            await writer.drain()
            writer.close()

    async with RawUpstream(handler) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        with pytest.raises(Http1ReadError):
            await response.aread()


async def test_a_response_closed_before_its_end_closes_its_connection() -> None:
    release = asyncio.Event()

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            if n == 1:
                assert await server.client_gone(reader)
                release.set()
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with RawUpstream(handler) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        assert await response.read() == b"first"
        await response.aclose()
        await asyncio.wait_for(release.wait(), 2)
        _, data = await post_and_read(llm, server.url)
    assert data == b"first"
    assert server.connections == 2


async def test_reading_pauses_above_the_high_water_mark_and_resumes() -> None:
    size = 4 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + payload
    async with RawUpstream(keep_alive(lambda h, b: answer)) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        await asyncio.sleep(0.3)  # the server would send it all; the client stops reading
        assert response.buffered <= http1._HIGH_WATER + 512 * 1024
        received = bytearray()
        while piece := await response.read():
            received += piece
            await asyncio.sleep(0)
        await response.aclose()
        _, again = await post_and_read(llm, server.url)
    assert bytes(received) == payload
    assert again == payload
    assert server.connections == 1


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelling_a_read_closes_the_connection_and_leaves_nothing_behind() -> None:
    gone = asyncio.Event()

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            if await server.client_gone(reader):
                gone.set()

    async with RawUpstream(handler) as server, open_client() as llm:
        response = await llm.post(server.url, BODY)
        assert await response.read() == b"first"
        tasks_before = asyncio.all_tasks()
        reading = asyncio.ensure_future(response.read())
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await asyncio.wait_for(gone.wait(), 2)
        pool = llm.pool_of(server.url)
        assert pool.connections == set()
        assert pool.idle_count == 0
        assert response.buffered == 0
        await asyncio.sleep(0.01)
        assert asyncio.all_tasks() <= tasks_before
        with pytest.raises(Http1ReadError):
            await response.read()


async def test_cancelling_while_waiting_for_the_head_closes_the_connection() -> None:
    gone = asyncio.Event()

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if await server.serve(reader, lambda h, b: b"x") and await server.client_gone(reader):
            gone.set()

    async with RawUpstream(handler) as server, open_client() as llm:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await llm.post(server.url, BODY)
        await asyncio.wait_for(gone.wait(), 2)
        assert llm.pool_of(server.url).connections == set()


# -- TLS ------------------------------------------------------------------------------------------


async def test_https_with_a_trusted_certificate(tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=cert)
    async with RawUpstream(keep_alive(lambda h, b: ok(b"secure")), tls=server_context) as server:
        async with open_client(ssl_context=trusting) as llm:
            for _ in range(3):
                _, data = await post_and_read(llm, server.url)
                assert data == b"secure"
        assert server.connections == 1
        assert header_of(server.requests[0][0], "host") == f"localhost:{server.port}"

        # The default trust (certifi) does not know this certificate ...
        untrusting = client(connect_timeout=2)
        try:
            with pytest.raises(Http1ConnectError):
                await untrusting.post(server.url, BODY)
        finally:
            await untrusting.aclose()


async def test_ssl_cert_file_from_the_environment_wins_over_certifi(
    tls_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    async with (
        RawUpstream(keep_alive(lambda h, b: ok(b"secure")), tls=server_context) as server,
        open_client() as llm,
    ):
        _, data = await post_and_read(llm, server.url)
    assert data == b"secure"


async def test_a_tls_handshake_that_never_ends_is_bounded_by_the_connect_timeout() -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accepts TCP, never answers the TLS hello
        writer.transport.abort()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    llm = client(connect_timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Http1ConnectError):
            await llm.post(f"https://127.0.0.1:{port}/v1/chat/completions", BODY)
        assert loop.time() - started < 2
    finally:
        await llm.aclose()
        done.set()
        server.close()
        await asyncio.sleep(0.01)


# -- configuration ------------------------------------------------------------------------------


def test_header_injection_and_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid header"):
        Http1Client(headers={"Authorization": "Bearer x\r\nEvil: 1"})
    with pytest.raises(ValueError, match="set by the client"):
        Http1Client(headers={"Host": "elsewhere"})
    with pytest.raises(ValueError, match="http"):
        Http1Client().endpoint("ftp://example.com/x")


async def test_the_request_head_names_the_port_only_when_it_is_not_the_default() -> None:
    llm = Http1Client()
    assert b"\r\nHost: example.com\r\n" in llm.endpoint("https://example.com/v1/chat/completions")._head
    assert b"\r\nHost: example.com:8443\r\n" in llm.endpoint("https://example.com:8443/x")._head
    assert b"\r\nHost: [::1]:8000\r\n" in llm.endpoint("http://[::1]:8000/x?a=b")._head
    assert llm.endpoint("http://[::1]:8000/x?a=b")._head.startswith(b"POST /x?a=b HTTP/1.1\r\n")
    await llm.aclose()


async def test_a_large_request_body_is_sent_whole() -> None:
    async with RawUpstream(keep_alive(lambda h, b: chunked(b"a", b"b", b"c"))) as server, open_client() as llm:
        _, data = await post_and_read(llm, server.url, b"x" * 3_000_000)
    assert data == b"abc"
    assert server.requests[0][1] == b"x" * 3_000_000


def test_a_client_used_from_another_event_loop_starts_afresh() -> None:
    """One client, two loops one after the other (a test harness, a restarted loop)."""

    async def once(llm: Http1Client) -> bytes:
        async with RawUpstream(keep_alive(lambda h, b: ok(b"again"))) as server:
            return (await post_and_read(llm, server.url))[1]

    llm = client()
    assert asyncio.run(once(llm)) == b"again"
    assert asyncio.run(once(llm)) == b"again"
    asyncio.run(llm.aclose())
