"""The pipelined Redis client without a server: the RESP2 parser, the command packer, and the
connection's FIFO, cancellation and deadline rules over a fake transport."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    InvalidResponse,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from app.infrastructure.redis_pipeline import (
    LuaScript,
    PipelinedRedis,
    RespParser,
    UnsupportedRedisUrl,
    _Connection,
    pack_command,
)

# (wire bytes, the reply as the parser gives it); an error reply is compared by class and message.
REPLIES: list[tuple[bytes, Any]] = [
    (b":0\r\n", 0),
    (b":1000\r\n", 1000),
    (b":-42\r\n", -42),
    (b":9007199254740993\r\n", 9007199254740993),
    (b"+OK\r\n", b"OK"),
    (b"+\r\n", b""),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # CRLF inside a bulk string is data
    (b"$3\r\n\x00\xff\r\r\n", b"\x00\xff\r"),
    (b"$-1\r\n", None),
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"*3\r\n:1\r\n$1\r\nx\r\n$-1\r\n", [1, b"x", None]),
    (b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*0\r\n", [[1, 2], [[]]]),
    (b"*8\r\n:1\r\n:0\r\n:0\r\n:9\r\n:6666667\r\n:-1\r\n:0\r\n:20500\r\n", [1, 0, 0, 9, 6666667, -1, 0, 20500]),
    (b"-ERR unknown command 'X'\r\n", ResponseError("unknown command 'X'")),
    (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", NoScriptError("No matching script. Please use EVAL.")),
    (b"-WRONGPASS invalid username-password pair\r\n", AuthenticationError("invalid username-password pair")),
    (b"*2\r\n:1\r\n-WRONGTYPE Operation against a key\r\n", [1, ResponseError("WRONGTYPE Operation against a key")]),
]


def normal(value: Any) -> Any:
    """Exceptions compare by class and message."""
    if isinstance(value, Exception):
        return (type(value), str(value))
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


STREAM = b"".join(wire for wire, _ in REPLIES)
EXPECTED = [normal(value) for _, value in REPLIES]


@pytest.mark.parametrize(("wire", "value"), REPLIES, ids=[repr(w[:24]) for w, _ in REPLIES])
def test_every_reply_type(wire: bytes, value: Any) -> None:
    parser = RespParser()
    assert [normal(r) for r in parser.feed(wire)] == [normal(value)]
    assert parser.pending == 0


def test_many_replies_in_one_read_come_out_in_order() -> None:
    assert [normal(r) for r in RespParser().feed(STREAM)] == EXPECTED


def test_a_stream_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        parser = RespParser()
        replies = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert [normal(r) for r in replies] == EXPECTED, cut
        assert parser.pending == 0


@pytest.mark.parametrize(("wire", "value"), REPLIES, ids=[repr(w[:24]) for w, _ in REPLIES])
def test_each_reply_split_at_every_pair_of_boundaries(wire: bytes, value: Any) -> None:
    for first in range(len(wire) + 1):
        for second in range(first, len(wire) + 1):
            parser = RespParser()
            replies = parser.feed(wire[:first]) + parser.feed(wire[first:second]) + parser.feed(wire[second:])
            assert [normal(r) for r in replies] == [normal(value)], (first, second)


def test_a_stream_fed_byte_by_byte_and_in_random_pieces() -> None:
    parser = RespParser()
    replies = [r for i in range(len(STREAM)) for r in parser.feed(STREAM[i : i + 1])]
    assert [normal(r) for r in replies] == EXPECTED
    rng = random.Random(7)
    for _ in range(200):
        parser, replies, pos = RespParser(), [], 0
        while pos < len(STREAM):
            step = rng.randint(1, 40)
            replies += parser.feed(STREAM[pos : pos + step])
            pos += step
        assert [normal(r) for r in replies] == EXPECTED


def test_a_large_bulk_string_in_many_reads_waits_for_its_length() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = b"$%d\r\n%b\r\n:7\r\n" % (len(payload), payload)
    parser = RespParser()
    replies: list[Any] = []
    for pos in range(0, len(wire), 65536):
        replies += parser.feed(wire[pos : pos + 65536])
    assert replies == [payload, 7]


def test_an_incomplete_reply_is_held_until_complete() -> None:
    parser = RespParser()
    assert parser.feed(b"*2\r\n:1\r\n$3\r\nab") == []
    assert parser.pending == len(b"*2\r\n:1\r\n$3\r\nab")
    assert parser.feed(b"c\r\n:5") == [[1, b"abc"]]
    assert parser.feed(b"\r\n") == [5]


@pytest.mark.parametrize("wire", [b"?what\r\n", b":12x\r\n", b"$abc\r\n"])
def test_garbage_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises((InvalidResponse, ValueError)):
        RespParser().feed(wire)


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    assert pack_command((b"EVALSHA", b"ab12", 2, "k:1", "k:2", 60000000, -3, "", 0.5)) == (
        b"*9\r\n$7\r\nEVALSHA\r\n$4\r\nab12\r\n$1\r\n2\r\n$3\r\nk:1\r\n$3\r\nk:2\r\n$8\r\n60000000\r\n"
        b"$2\r\n-3\r\n$0\r\n\r\n$3\r\n0.5\r\n"
    )
    assert pack_command(("MGET", "é")) == b"*2\r\n$4\r\nMGET\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        pack_command(("SET", "k", True))


def test_a_script_is_sent_by_its_sha1() -> None:
    script = LuaScript("return 1")
    assert script.sha == b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    assert script.body == b"return 1"


def test_urls_are_read_as_redis_py_reads_them() -> None:
    client = PipelinedRedis.from_url("redis://alice:s%40cret@cache.internal:6380/3", timeout=0.5)
    assert (client.host, client.port, client.db, client.timeout) == ("cache.internal", 6380, 3, 0.5)
    assert (client._username, client._password, client._ssl) == ("alice", "s@cret", None)
    assert PipelinedRedis.from_url("redis://:pw@h", timeout=1)._username is None
    tls = PipelinedRedis.from_url("rediss://h:6379/0", timeout=1)._ssl
    assert tls is not None
    assert tls.check_hostname
    relaxed = PipelinedRedis.from_url("rediss://h:6379/0?ssl_cert_reqs=none", timeout=1)._ssl
    assert relaxed is not None
    assert not relaxed.check_hostname
    with pytest.raises(UnsupportedRedisUrl):
        PipelinedRedis.from_url("unix:///run/redis.sock", timeout=1)


# --- the connection over a fake transport -------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


def connection(timeout: float = 5.0) -> tuple[_Connection, FakeTransport]:
    conn = _Connection(asyncio.get_running_loop(), timeout)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_commands_of_one_loop_turn_are_written_together_and_answered_in_order() -> None:
    conn, transport = connection()
    waiters = [conn.send(pack_command(("ECHO", str(i)))) for i in range(5)]
    assert transport.written == []
    await asyncio.sleep(0)
    assert transport.written == [b"".join(pack_command(("ECHO", str(i))) for i in range(5))]
    conn.data_received(b"$1\r\n0\r\n$1\r\n1\r\n-ERR no\r\n$1\r")
    conn.data_received(b"\n3\r\n$1\r\n4\r\n")
    assert [w.result() for w in (waiters[0], waiters[1], waiters[3], waiters[4])] == [b"0", b"1", b"3", b"4"]
    assert isinstance(waiters[2].exception(), ResponseError)


async def test_a_cancelled_callers_reply_is_dropped_and_the_order_kept() -> None:
    conn, _ = connection()
    first, second, third = (conn.send(pack_command(("ECHO", x))) for x in "abc")
    second.cancel()
    conn.data_received(b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
    assert (first.result(), third.result()) == (b"a", b"c")


async def test_a_late_reply_closes_the_connection_and_fails_every_call_in_flight() -> None:
    conn, transport = connection(timeout=0.05)
    early = conn.send(pack_command(("PING",)))
    await asyncio.sleep(0.03)
    later = conn.send(pack_command(("PING",)))
    await asyncio.sleep(0.04)  # `early` is late, `later` not yet
    assert transport.aborted
    assert conn.closed
    assert isinstance(early.exception(), TimeoutError)
    assert isinstance(later.exception(), ConnectionError)
    assert isinstance(conn.send(pack_command(("PING",))).exception(), ConnectionError)


async def test_the_deadline_timer_follows_the_oldest_call_left() -> None:
    conn, transport = connection(timeout=0.05)
    conn.send(pack_command(("PING",)))
    await asyncio.sleep(0.03)
    conn.data_received(b"+PONG\r\n")
    waiter = conn.send(pack_command(("PING",)))
    await asyncio.sleep(0.03)  # the first deadline passed; the second call is within its own
    assert not conn.closed
    assert not waiter.done()
    conn.data_received(b"+PONG\r\n")
    assert waiter.result() == b"PONG"
    await asyncio.sleep(0.06)
    assert not conn.closed
    assert not transport.aborted


async def test_a_reply_nobody_asked_for_or_garbage_closes_the_connection() -> None:
    conn, transport = connection()
    conn.data_received(b"+OK\r\n")
    assert conn.closed
    assert transport.aborted
    conn, transport = connection()
    waiter = conn.send(pack_command(("PING",)))
    conn.data_received(b"!garbage\r\n")
    assert conn.closed
    assert isinstance(waiter.exception(), ConnectionError)


async def test_a_lost_connection_fails_the_calls_in_flight() -> None:
    conn, _ = connection()
    waiters = [conn.send(pack_command(("PING",))) for _ in range(3)]
    conn.connection_lost(ConnectionResetError("reset by peer"))
    assert all(isinstance(w.exception(), ConnectionError) for w in waiters)
    assert "reset by peer" in str(waiters[0].exception())
