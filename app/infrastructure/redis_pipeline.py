"""A lean, auto-pipelining Redis client for the request hot path (`PipelinedRedis`).

Why: every chat completion makes Redis round trips (the rate-limit admission and settlement
scripts, the stream lease release, the revocation ``MGET``). Through redis-py's asyncio
client each cost ~155-185 µs of CPU (blocking-pool checkout, command packing, the
pure-Python RESP parser, a timeout context per call); the py-spy profile put ~20 % of the
gateway's CPU per request there. This client does the same calls for a fraction of that
(`python -m bench.redis_micro`, docs/benchmarks.md "Choices"):

- one TCP (or TLS) connection, an `asyncio.Protocol`; no pool, no lock, no task per call;
- a command is packed into one ``bytes``; commands issued in the same event-loop turn are
  written together (one ``send``), and every caller's reply is matched to it in FIFO order,
  so any number of concurrent callers share the connection with their commands in flight
  together (auto-pipelining);
- an incremental RESP2 reply parser written for the small replies of the hot path;
- one deadline timer per connection (not per call): every call is bounded by ``timeout``; a
  call not answered in time closes the connection (every call in flight fails, the next one
  reconnects), so a hung Redis costs a request the timeout, never a pile of waiting futures;
- a lost connection (Redis restarted) fails the calls in flight; the next call reconnects;
- a cancelled caller's reply is still read and dropped, so the FIFO never shifts;
- errors are redis-py's exception classes (``ConnectionError``, ``TimeoutError``,
  ``ResponseError``, ``NoScriptError``...), so every ``except RedisError`` keeps working.

It speaks only what the hot path needs (`evalsha`, `mget`, `ping`, `execute`); everything
else stays on redis-py. `RedisPyHotPath` offers the same calls over redis-py: the fallback
for URLs this client cannot serve (``unix://``) and the A/B switch
(``REDIS_HOT_PATH_CLIENT=redis-py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, cast

from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float
Reply = Any


class UnsupportedRedisUrl(ValueError):
    """The URL names a transport this client does not speak (e.g. ``unix://``)."""


class LuaScript:
    """A Lua script and its SHA1, for ``EVALSHA`` (the body is sent once after ``NOSCRIPT``)."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()


class HotPathRedis(Protocol):
    """The Redis calls made on every request: what `PipelinedRedis` and `RedisPyHotPath` offer.

    ``bounds_calls``: every call ends (answered or failed) within the client's own timeout,
    waits included, so callers need no timer of their own.
    """

    bounds_calls: bool

    async def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Reply: ...

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def ping(self, **kwargs: Any) -> bool: ...

    async def aclose(self) -> None: ...


# --- RESP2 replies ---------------------------------------------------------------------------------


def parse_error(message: str) -> RedisError:
    """The redis-py exception for an error reply (``NOSCRIPT ...`` -> `NoScriptError`, ...)."""
    error: RedisError = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


def _parse(buf: bytes, pos: int) -> tuple[Reply, int]:  # noqa: PLR0911 - one return per reply type
    """The reply starting at ``buf[pos]``: ``(value, end)``, or ``(None, -need)`` when the buffer
    ends first, ``need`` being the smallest buffer length that could hold the reply (> len(buf)).

    Error replies are returned as exception instances (raised by the caller for a top-level
    reply, kept in place inside an array, as redis-py's pipelines do).
    """
    crlf = buf.find(b"\r\n", pos)
    if crlf < 0:
        return None, -(len(buf) + 1)
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        size = int(buf[pos + 1 : crlf])
        if size < 0:
            return None, crlf + 2
        start = crlf + 2
        stop = start + size
        if stop + 2 > len(buf):
            return None, -(stop + 2)
        return buf[start:stop], stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : crlf]), crlf + 2
    if kind == 42:  # * array
        count = int(buf[pos + 1 : crlf])
        if count < 0:
            return None, crlf + 2
        items: list[Reply] = []
        end = crlf + 2
        for _ in range(count):
            item, end = _parse(buf, end)
            if end < 0:
                return None, end
            items.append(item)
        return items, end
    if kind == 43:  # + simple string
        return buf[pos + 1 : crlf], crlf + 2
    if kind == 45:  # - error
        return parse_error(buf[pos + 1 : crlf].decode("utf-8", "replace")), crlf + 2
    raise InvalidResponse(f"Protocol error: unexpected reply type byte {buf[pos : pos + 1]!r}")


class RespParser:
    """Incremental RESP2 reply parser: bytes in as they arrive, complete replies out.

    Replies may be split across reads at any byte, and one read may hold many replies.
    Integers, simple strings (``bytes``), errors (redis-py exception instances), bulk strings
    (``bytes``), nil (``None``), arrays (``list``, nested; nil array ``None``). A reply still
    incomplete is re-scanned from its start when more bytes arrive, unless the bytes it needs
    are known not to be there yet (a bulk string's length): cheap for the hot path's small
    replies, linear for one large bulk string.
    """

    __slots__ = ("_chunks", "_have", "_need")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0

    def feed(self, data: bytes) -> list[Reply]:
        """The replies completed by ``data`` (raises `InvalidResponse` on a protocol error)."""
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = data
        replies: list[Reply] = []
        pos, size = 0, len(buf)
        while pos < size:
            value, end = _parse(buf, pos)
            if end < 0:
                rest = buf[pos:]
                self._chunks = [rest]
                self._have = len(rest)
                self._need = -end - pos
                break
            replies.append(value)
            pos = end
        return replies

    @property
    def pending(self) -> int:
        """Bytes held of a reply not yet complete."""
        return self._have if self._chunks else 0


def pack_command(args: Sequence[Arg]) -> bytes:
    """One RESP command (an array of bulk strings) as one ``bytes``, encoded as redis-py does."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")  # redis-py refuses bools too
        append(b"$%d\r\n" % len(value))
        append(value)
        append(b"\r\n")
    return b"".join(parts)


# --- the connection --------------------------------------------------------------------------------


# How many turns of the event loop a call past its deadline waits before it is late (see
# `_Connection._check_deadline`).
_GRACE_TURNS = 2


class _Connection(asyncio.Protocol):
    """One Redis connection: writes commands, matches replies to futures in FIFO order.

    A reply that belongs to a cancelled caller is read and dropped. One timer watches the
    oldest call's deadline; a late reply (or a protocol error) closes the connection and fails
    every call in flight.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self._loop = loop
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser()
        self._waiters: deque[asyncio.Future[Reply]] = deque()
        self._deadlines: deque[float] = deque()
        self._out: list[bytes] = []
        self._timer: asyncio.Handle | None = None
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except (RedisError, ValueError) as exc:  # garbage on the wire: nothing after it can be trusted
            self._abort(f"Protocol error: {exc}")
            return
        waiters, deadlines = self._waiters, self._deadlines
        for reply in replies:
            if not waiters:
                self._abort("Protocol error: a reply nobody asked for")
                return
            waiter = waiters.popleft()
            deadlines.popleft()
            if waiter.done():  # its caller was cancelled: the reply is dropped, the order kept
                continue
            if isinstance(reply, RedisError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._abort(f"Connection to Redis lost: {exc}" if exc else "Connection to Redis closed by the server")

    # calls

    def send(self, payload: bytes) -> asyncio.Future[Reply]:
        """Queue one packed command; the future gets its reply (or error)."""
        loop = self._loop
        waiter: asyncio.Future[Reply] = loop.create_future()
        if self.closed:
            waiter.set_exception(RedisConnectionError("Connection to Redis closed"))
            return waiter
        if not self._out:  # the first command of this loop turn: write them all at its end
            loop.call_soon(self._flush)
        self._out.append(payload)
        deadline = loop.time() + self._timeout
        self._waiters.append(waiter)
        self._deadlines.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return waiter

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.closed or self._transport is None:
            return
        self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _check_deadline(self, grace: int = _GRACE_TURNS) -> None:
        self._timer = None
        deadlines = self._deadlines
        if self.closed or not deadlines:
            return
        now = self._loop.time() + 0.001  # a timer may fire up to the clock's resolution early
        if deadlines[0] > now:  # the calls it was armed for were answered: watch the oldest one left
            self._timer = self._loop.call_at(deadlines[0], self._check_deadline)
            return
        if grace:
            # A reply that came in while the loop was handling other sockets (hundreds of them in
            # a burst) is read at the next poll for I/O, which uvloop runs after its timers: two
            # turns through the ready queue let the loop poll once more before the call is late.
            self._timer = self._loop.call_soon(self._check_deadline, grace - 1)
            return
        late = 0
        for deadline in deadlines:  # in increasing order
            if deadline > now:
                break
            late += 1
        self._abort("Connection to Redis closed: an earlier call on it timed out", late=late)

    def close(self) -> None:
        self._abort("Connection to Redis closed by the client")

    def _abort(self, reason: str, *, late: int = 0) -> None:
        """Close now: the ``late`` oldest calls fail with `TimeoutError`, the others with
        `ConnectionError` (each its own exception object: they are raised in different tasks)."""
        waiters = list(self._waiters)
        self._waiters.clear()
        self._deadlines.clear()
        self._out = []
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.loop.is_closed():  # a connection left behind by a finished event loop: nothing runs there
            self._transport = None
            return
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows, with nothing left to fail
            self._transport = None
        for index, waiter in enumerate(waiters):
            if not waiter.done():
                waiter.set_exception(
                    RedisTimeoutError("Timeout reading from Redis") if index < late else RedisConnectionError(reason)
                )


class PipelinedRedis:
    """The hot path's Redis client: one lazily opened, auto-pipelined connection (module docstring).

    Build it with `from_url` from the same ``REDIS_URL`` as redis-py (``redis://``,
    ``rediss://``; username/password -> ``AUTH``, ``/db`` -> ``SELECT``). Every call, and the
    connect, is bounded by ``timeout`` seconds (``REDIS_SOCKET_TIMEOUT_SECONDS``).
    """

    bounds_calls = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 0.25,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self._username = username
        self._password = password
        self._ssl = ssl_context
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self.connects = 0  # connections opened so far (tests, diagnostics)

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> PipelinedRedis:
        """Parsed by redis-py's own URL parser, so both clients read ``REDIS_URL`` alike.

        Raises `UnsupportedRedisUrl` for a transport other than TCP or TLS (``unix://``).
        """
        kwargs: dict[str, Any] = dict(parse_url(url))
        connection_class = kwargs.pop("connection_class", None)
        if connection_class is not None and connection_class is not SSLConnection:
            raise UnsupportedRedisUrl(f"{connection_class.__name__} is not supported by the pipelined client")
        context: ssl.SSLContext | None = None
        if connection_class is SSLConnection:
            # redis-py's own TLS settings (certificate checks on by default, ssl_* query options).
            ssl_options = {name: value for name, value in kwargs.items() if name.startswith("ssl_")}
            context = SSLConnection(**ssl_options).ssl_context.get()
        return cls(
            kwargs.get("host", "localhost"),
            int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            ssl_context=context,
            timeout=timeout,
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def execute(self, *args: Arg) -> Reply:
        """Send one command, return its reply (redis-py's exception on an error reply)."""
        conn = self._conn
        if conn is None or conn.closed or conn.loop is not asyncio.get_running_loop():
            conn = await self._connected()
        return await conn.send(pack_command(args))

    async def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        """Run a script by SHA1; after ``NOSCRIPT`` (restart, failover, ``SCRIPT FLUSH``) send its
        body with ``EVAL``, which also caches it for the next ``EVALSHA``."""
        try:
            return await self.execute(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute(b"EVAL", script.body, len(keys), *keys, *args)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self.execute(b"MGET", *keys)
        return values

    async def ping(self, **_: Any) -> bool:
        return bool(await self.execute(b"PING") == b"PONG")

    async def aclose(self) -> None:
        """Close the connection (calls in flight fail); later calls raise `ConnectionError`."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # connecting

    async def _connected(self) -> _Connection:
        """The open connection; concurrent callers share one connect.

        A connection made on another event loop (a second ``asyncio.run`` in one process) is
        dropped: its futures could not be awaited here.
        """
        if self._closed:
            raise RedisConnectionError("The Redis client is closed")
        loop = asyncio.get_running_loop()
        if self._conn is not None and self._conn.loop is not loop:
            self._conn.close()
            self._conn = None
        task = self._connecting
        if task is not None and task.get_loop() is not loop:
            task = None
        if task is None:
            task = loop.create_task(self._connect(), name="redis-connect")
            self._connecting = task
            task.add_done_callback(_retrieve)
        # Shielded: a caller that is cancelled must not cancel the others' connect.
        return await asyncio.shield(task)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.timeout),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
                handshake: list[asyncio.Future[Reply]] = []
                if self._password is not None:
                    auth: tuple[Arg, ...] = (b"AUTH", self._password)
                    if self._username:
                        auth = (b"AUTH", self._username, self._password)
                    handshake.append(conn.send(pack_command(auth)))
                if self.db:
                    handshake.append(conn.send(pack_command((b"SELECT", self.db))))
                for result in await asyncio.gather(*handshake, return_exceptions=True):
                    if isinstance(result, BaseException):
                        raise result
        except BaseException as exc:
            if conn is not None:
                conn.close()
            self._connecting = None
            if isinstance(exc, RedisError) or not isinstance(exc, Exception):
                raise  # redis-py's error (a refused AUTH...), or a cancellation
            if isinstance(exc, TimeoutError):  # asyncio.timeout's
                raise RedisTimeoutError(f"Timeout connecting to Redis at {self.host}:{self.port}") from exc
            raise RedisConnectionError(f"Error connecting to Redis at {self.host}:{self.port}: {exc}") from exc
        self._connecting = None
        if self._closed:  # aclose() ran meanwhile
            conn.close()
            raise RedisConnectionError("The Redis client is closed")
        self._conn = conn
        self.connects += 1
        return conn


def _retrieve(task: asyncio.Task[_Connection]) -> None:
    """Mark a failed connect's error as seen (its callers may all have been cancelled)."""
    if not task.cancelled():
        task.exception()


# --- the same calls over redis-py ------------------------------------------------------------------


class RedisPyHotPath:
    """`HotPathRedis` over a redis-py client: the fallback for ``unix://`` URLs and the A/B switch.

    Scripts go through redis-py's `Script` (``EVALSHA``, re-loaded after ``NOSCRIPT``). Closing
    it leaves the redis-py client open (its owner closes it).
    """

    # redis-py bounds socket reads, but not the wait for a pooled connection.
    bounds_calls = False

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._scripts: dict[bytes, AsyncScript] = {}

    async def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        registered = self._scripts.get(script.sha)
        if registered is None:
            registered = self._scripts[script.sha] = self.client.register_script(script.body)
        return await registered(keys=list(keys), args=list(args))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        values = await self.client.mget(list(keys))
        return cast(list[bytes | None], values)  # bytes: the client does not decode responses

    async def ping(self, **kwargs: Any) -> bool:
        return bool(await self.client.ping(**kwargs))

    async def aclose(self) -> None:
        return None
