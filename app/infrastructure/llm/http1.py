"""A lean HTTP/1.1 client for the upstream LLM: keep-alive pools on asyncio protocols.

Why it exists: on the gateway's hot path (one POST to the upstream per chat request, then a
relay of its body) httpx, httpx-aiohttp and aiohttp together cost about a fifth of the
gateway's CPU (request building, cookies, three layers of response objects, pool
bookkeeping). This module does only what that path needs: ``POST`` a bytes body to an
origin, hand back the status, the headers and the body as it arrives. It is built on
``loop.create_connection`` and httptools' llhttp parser, without a task per request: the
protocol resolves futures from its callbacks.

What it does:

- one pool per origin (scheme, host, port), ``http`` and ``https`` (TLS with certifi's CA
  bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, as httpx does);
- at most ``max_connections`` per pool; beyond, a request waits its turn (FIFO) for at most
  the pool timeout; idle connections are reused newest first, closed once idle longer than
  ``keepalive_seconds`` or when the server closed them;
- a request on a reused connection that fails before any byte of the answer arrived (the
  server closed the idle connection just as it was reused) is sent again, once, on a new
  connection; nothing else is retried here (the caller owns retries and backoff);
- bodies framed by ``Content-Length``, chunked or by the end of the connection; gzip and
  deflate decoded; 1xx interim answers skipped; anything that is not HTTP is
  `Http1ProtocolError`;
- a read returns everything buffered so far in one piece (several SSE events of one TCP
  read come out together, which is what keeps the relay cheap); reading pauses above
  ``_HIGH_WATER`` buffered bytes until the consumer catches up;
- a response read to its end gives its connection back to the pool; one closed earlier, or
  cancelled, closes its connection.

Errors are this module's own (`Http1Error` and subclasses), never a bare ``OSError``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import ssl
import zlib
from collections.abc import Mapping
from typing import Final, cast
from urllib.parse import urlsplit

import certifi
import httptools

__all__ = [
    "Http1Client",
    "Http1ConnectError",
    "Http1ConnectTimeout",
    "Http1Endpoint",
    "Http1Error",
    "Http1PoolTimeout",
    "Http1ProtocolError",
    "Http1ReadError",
    "Http1Response",
    "default_ssl_context",
]

# Above this many buffered (unread) body bytes the connection stops reading from its socket.
_HIGH_WATER: Final = 256 * 1024
# The status line and headers of an answer may not exceed this.
_MAX_HEAD_BYTES: Final = 64 * 1024
USER_AGENT: Final = "agent-api"


class Http1Error(Exception):
    """Any failure of this client."""


class Http1ConnectError(Http1Error):
    """No connection could be opened (refused, unresolvable, TLS handshake failed, client closed)."""


class Http1ConnectTimeout(Http1ConnectError):
    """Opening the connection (TCP and TLS) took longer than the connect timeout."""


class Http1PoolTimeout(Http1Error):
    """Every connection of the pool stayed busy for the whole pool timeout."""


class Http1ProtocolError(Http1Error):
    """The server's answer is not valid HTTP/1.1 (or a body encoding could not be decoded)."""


class Http1ReadError(Http1Error):
    """The connection broke (reset, or closed by the server) before the answer was complete."""


class _StaleConnection(Http1ReadError):
    """A reused connection failed before any byte of the answer: safe to send again."""


class _ExtraMessage(Exception):
    """The server started another message after the answer on the same connection."""


def default_ssl_context() -> ssl.SSLContext:
    """The trust httpx uses by default: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else certifi."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Decoder:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it) decoding of a body."""

    __slots__ = ("_deflate", "_zlib")

    def __init__(self, encoding: bytes) -> None:
        self._deflate = encoding == b"deflate"
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        try:
            return self._zlib.decompress(data)
        except zlib.error:
            if not self._deflate:
                raise
            # "deflate" without its zlib header: retry as a raw deflate stream, once.
            self._deflate = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._zlib.decompress(data)

    def flush(self) -> bytes:
        return self._zlib.flush()


class Http1Response:
    """One answer: ``status_code``, `header`, and the body through `read` until ``b""``.

    Call `aclose` (or read to the end) when done: a response read to its end returns its
    connection to the pool, one closed before its end closes the connection.
    """

    __slots__ = (
        "_chunks",
        "_close_delimited",
        "_closed",
        "_complete",
        "_conn",
        "_decoder",
        "_error",
        "_head",
        "_head_done",
        "_loop",
        "_raw_headers",
        "_waiter",
        "buffered",
        "status_code",
    )

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.status_code = 0
        self.buffered = 0
        self._conn: _Connection | None = conn
        self._loop = loop
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._head: asyncio.Future[None] = loop.create_future()
        self._head_done = False
        self._complete = False
        self._close_delimited = False
        self._closed = False
        self._error: Http1Error | None = None
        self._decoder: _Decoder | None = None

    # -- the consumer's side ------------------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header as received (names in their original case)."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._raw_headers]

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        key = name.lower().encode("latin-1")
        for raw_name, value in self._raw_headers:
            if raw_name.lower() == key:
                return value.decode("latin-1")
        return None

    async def read(self) -> bytes:
        """Everything that arrived since the last read, at once; ``b""`` at the end of the body.

        Waits when nothing is buffered. Raises `Http1ReadError` / `Http1ProtocolError` when
        the connection broke (after handing out whatever arrived before). Cancelling a read
        closes the connection.
        """
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                if self._decoder is not None:
                    data = self._decode(data)
                    if not data:
                        continue
                return data
            if self._error is not None:
                raise self._error
            if self._complete:
                if self._decoder is not None:
                    rest = self._decoder.flush()
                    self._decoder = None
                    if rest:
                        return rest
                self._finish()
                return b""
            if self._closed:
                raise Http1ReadError("the response was closed")
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            except BaseException:
                self._waiter = None
                self._abandon()
                raise

    async def aread(self) -> bytes:
        """The whole (remaining) body."""
        parts = []
        while piece := await self.read():
            parts.append(piece)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Ends the response: its connection goes back to the pool if the answer was complete."""
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        if self._complete and self._error is None:
            self._finish()
        else:
            self._abandon()

    # -- internals ----------------------------------------------------------------------

    def _decode(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(data)
        except zlib.error:
            self._error = Http1ProtocolError("the answer's body could not be decoded")
            self._abandon()
            raise self._error from None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: Http1Error) -> None:
        """The connection broke or spoke garbage: the head or the next read raises `error`."""
        if self._complete or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            # The sender may already be gone (cancelled); the exception is then nobody's.
            self._head.exception()
        self._wake()
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.drop()

    def _finish(self) -> None:
        """The body was read (or received) to its end: the connection may serve again."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.release()

    def _abandon(self) -> None:
        """Closed before its end, cancelled or broken: the connection is closed, the buffer dropped."""
        self._closed = True
        self._chunks.clear()
        self.buffered = 0
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.drop()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: writes requests, parses answers into the current response."""

    __slots__ = (
        "alive",
        "counted",
        "got_bytes",
        "head_bytes",
        "idle_since",
        "in_idle",
        "parser",
        "paused",
        "pool",
        "response",
        "reusable",
        "reused",
        "transport",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.alive = True
        self.counted = True
        self.reused = False
        self.reusable = True
        self.in_idle = False
        self.idle_since = 0.0
        self.got_bytes = False
        self.head_bytes = 0
        self.paused = False

    # -- requests -----------------------------------------------------------------------

    async def send(self, request: bytes) -> Http1Response:
        transport = self.transport
        if not self.alive or transport is None or transport.is_closing():
            self.drop()
            raise _StaleConnection("the connection was closed before it was used")
        response = Http1Response(self, self.pool.loop)
        self.response = response
        self.got_bytes = False
        self.head_bytes = 0
        try:
            transport.write(request)
        except (OSError, RuntimeError):  # the transport closed under us (uvloop raises, asyncio drops)
            self.response = None
            self.drop()
            raise _StaleConnection("the connection closed as the request was written") from None
        try:
            await response._head
        except BaseException:
            response._abandon()
            raise
        return response

    def release(self) -> None:
        self.response = None
        if self.alive and self.reusable:
            self.pool.release(self)
        else:
            self.drop()

    def drop(self) -> None:
        """Closes the connection at once and frees its place in the pool."""
        self.alive = False
        self.response = None
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and self.alive:
            self.transport.resume_reading()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, hence a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for (while idle): the connection's framing can't be trusted.
            self.reusable = False
            self.drop()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.reusable = False
            if response._complete:
                # Junk after a complete answer: the answer stands, the connection is not reused.
                response._wake()
                return
            response._fail(Http1ProtocolError("the upstream's answer is not valid HTTP/1.1"))
            return
        if not response._head_done:
            # The parser keeps a partial head in memory: bound it (checked per read).
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD_BYTES:
                response._fail(Http1ProtocolError("the answer's head is larger than allowed"))
                return
        if response._chunks:
            response._wake()
            if response.buffered > _HIGH_WATER and not self.paused and self.alive:
                self.paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self.alive = False
        self.pool.discard(self)

    def _ended(self, exc: Exception | None) -> None:
        """The server closed (EOF) or the connection broke: finish or fail the current answer."""
        self.alive = False
        self.reusable = False
        response = self.response
        if response is None or response._complete or response._error is not None:
            return
        if response._head_done and response._close_delimited and exc is None:
            response._complete = True  # a body without length or chunks ends with the connection
            response._wake()
        elif not self.got_bytes and self.reused:
            response._fail(_StaleConnection("the server closed the reused connection"))
        elif not response._head_done:
            response._fail(Http1ReadError("the server closed the connection without a complete answer"))
        else:
            response._fail(Http1ReadError("the connection broke before the answer was complete"))

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self.response
        assert response is not None
        if response._complete:
            raise _ExtraMessage
        response._raw_headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response._raw_headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # 1xx interim answer: its end comes at once, the real answer follows
        response = self.response
        assert response is not None
        response.status_code = status
        framed = False
        encoding = b""
        for name, value in response._raw_headers:
            size = len(name)
            if size == 14 and name.lower() == b"content-length":
                framed = True
            elif size == 17 and name.lower() == b"transfer-encoding":
                framed = framed or b"chunked" in value.lower()
            elif size == 16 and name.lower() == b"content-encoding":
                encoding = value.strip().lower()
        response._close_delimited = not framed and status not in (204, 304)
        if encoding and encoding != b"identity":
            if encoding in (b"gzip", b"x-gzip", b"deflate"):
                response._decoder = _Decoder(b"deflate" if encoding == b"deflate" else b"gzip")
            else:
                raise Http1ProtocolError("unsupported content-encoding")
        response._head_done = True
        head = response._head
        if not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._chunks.append(body)
        response.buffered += len(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if not response._head_done:
            return  # the end of a 1xx interim answer
        response._complete = True
        if not self.parser.should_keep_alive() or self.parser.get_http_version() != "1.1":
            self.reusable = False
        response._wake()


class _Pool:
    """The connections to one origin: idle ones newest first, waiters served in arrival order."""

    __slots__ = (
        "_closed",
        "_idle",
        "_total",
        "_waiters",
        "connect_timeout",
        "connections",
        "host",
        "keepalive",
        "loop",
        "max_connections",
        "opened",
        "pool_timeout",
        "port",
        "ssl",
    )

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        max_connections: int,
        connect_timeout: float,
        pool_timeout: float,
        keepalive_seconds: float,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self.keepalive = keepalive_seconds
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # bound at first use
        self.connections: set[_Connection] = set()
        self.opened = 0  # connections opened in the pool's life (tests, metrics)
        self._idle: collections.deque[_Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._total = 0  # connections open or being opened
        self._closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> _Connection:
        """A connection to send on: an idle one (unless `fresh`), a new one, or one freed for us."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self._bind(loop)
        while True:
            if self._closed:
                raise Http1ConnectError("the client is closed")
            idle = self._idle
            if fresh:
                if idle and self._total >= self.max_connections:
                    self._close_idle(idle.popleft())
            else:
                while idle:
                    conn = idle.pop()
                    conn.in_idle = False
                    if conn.alive and self.loop.time() - conn.idle_since <= self.keepalive:
                        return conn
                    self._close_idle(conn)
            if self._total < self.max_connections and not self._waiters:
                self._total += 1
                return await self._open()
            granted = await self._wait()
            if granted is None:
                return await self._open()
            if granted.alive:
                return granted
            granted.drop()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from another event loop (tests, a restarted loop): start afresh.

        Connections and waiters of the previous loop belong to it and are forgotten here.
        """
        if self.loop is not None:
            for conn in self.connections:
                conn.counted = False
                conn.alive = False
            self.connections.clear()
            self._idle.clear()
            self._waiters.clear()
            self._total = 0
        self.loop = loop

    def release(self, conn: _Connection) -> None:
        """A connection whose answer was read to its end: to the first waiter, else idle."""
        conn.reused = True
        if self._closed:
            conn.drop()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        now = self.loop.time()
        conn.idle_since = now
        conn.in_idle = True
        idle = self._idle
        idle.append(conn)
        # The oldest idle connections sit at the bottom of the stack: expire them while here.
        while idle and now - idle[0].idle_since > self.keepalive:
            self._close_idle(idle.popleft())

    def discard(self, conn: _Connection) -> None:
        """A connection is gone (closed or lost): its place in the pool goes to the next waiter."""
        if not conn.counted:
            return
        conn.counted = False
        self.connections.discard(conn)
        if conn.in_idle:
            conn.in_idle = False
            self._idle.remove(conn)
        self._give_back_slot()

    def close(self) -> None:
        self._closed = True
        for conn in list(self.connections):
            response = conn.response
            if response is not None:
                response._fail(Http1ReadError("the client was closed"))
            conn.drop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Http1ConnectError("the client is closed"))

    def _close_idle(self, conn: _Connection) -> None:
        conn.in_idle = False
        conn.alive = False
        self.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    async def _wait(self) -> _Connection | None:
        """Waits (FIFO) for a connection (or the right to open one), at most the pool timeout."""
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(self.pool_timeout, self._expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                granted = waiter.result()  # granted just as we were cancelled: pass it on
                if granted is None:
                    self._give_back_slot()
                else:
                    self.release(granted)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[_Connection | None]) -> None:
        if not waiter.done():
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_exception(Http1PoolTimeout("no connection of the pool became free in time"))

    def _give_back_slot(self) -> None:
        """One place fewer is taken: the first waiter may open a connection in it."""
        self._total -= 1
        while self._waiters and self._total < self.max_connections:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._total += 1
                waiter.set_result(None)

    async def _open(self) -> _Connection:
        """Opens a connection in a place already counted in `_total`."""
        conn = _Connection(self)
        self.connections.add(conn)
        server_hostname = self.host if self.ssl is not None else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=self.connect_timeout if self.ssl is not None else None,
                )
        except TimeoutError:
            conn.drop()
            raise Http1ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            conn.drop()
            raise Http1ConnectError(f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}") from exc
        except BaseException:
            conn.drop()
            raise
        self.opened += 1
        return conn


class Http1Endpoint:
    """``POST`` to one URL: the request head is built once, a request only adds its length and body."""

    __slots__ = ("_head", "_pool")

    def __init__(self, pool: _Pool, head: bytes) -> None:
        self._pool = pool
        self._head = head

    async def post(self, body: bytes) -> Http1Response:
        """Sends the body; returns once the answer's status and headers arrived."""
        request = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        pool = self._pool
        conn = await pool.acquire()
        reused = conn.reused
        try:
            return await conn.send(request)
        except _StaleConnection:
            if not reused:
                raise Http1ReadError("the server closed the connection without an answer") from None
        # The server closed the idle connection as we reused it: once more, on a new connection.
        conn = await pool.acquire(fresh=True)
        try:
            return await conn.send(request)
        except _StaleConnection:
            raise Http1ReadError("the server closed the connection without an answer") from None


class Http1Client:
    """Pools of keep-alive HTTP/1.1 connections, one per origin, for ``POST`` requests.

    ``headers`` are sent with every request, after ``Host`` and before the defaults
    (``Content-Type: application/json``, ``Accept-Encoding: identity``, ``User-Agent``)
    that they do not name themselves.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        connect_timeout: float = 5.0,
        pool_timeout: float | None = None,
        keepalive_seconds: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.pool_timeout = connect_timeout if pool_timeout is None else pool_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl_context
        merged = dict(headers or {})
        lowered = {name.lower() for name in merged}
        for name, value in (
            ("Content-Type", "application/json"),
            ("Accept-Encoding", "identity"),
            ("User-Agent", USER_AGENT),
        ):
            if name.lower() not in lowered:
                merged[name] = value
        for name, value in merged.items():
            if any(c in name + value for c in "\r\n\0") or ":" in name or not name:
                raise ValueError(f"invalid header {name!r}")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name!r} is set by the client itself")
        self._headers = merged
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._endpoints: dict[str, Http1Endpoint] = {}

    def endpoint(self, url: str) -> Http1Endpoint:
        """The `Http1Endpoint` for ``POST`` to `url` (``http://`` or ``https://``)."""
        known = self._endpoints.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL with a host is needed")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not supported")
        host = parts.hostname
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            context = (self._ssl or default_ssl_context()) if scheme == "https" else None
            if context is not None and self._ssl is None:
                self._ssl = context  # one context for every https origin of this client
            pool = _Pool(
                host,
                port,
                context,
                max_connections=self.max_connections,
                connect_timeout=self.connect_timeout,
                pool_timeout=self.pool_timeout,
                keepalive_seconds=self.keepalive_seconds,
            )
            self._pools[key] = pool
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority = f"{authority}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{name}: {value}" for name, value in self._headers.items()]
        lines.append("Content-Length: ")
        head = "\r\n".join(lines).encode("latin-1")
        endpoint = Http1Endpoint(pool, head)
        self._endpoints[url] = endpoint
        return endpoint

    def pool_of(self, url: str) -> _Pool:
        """The pool serving `url`'s origin (for tests and metrics)."""
        return self.endpoint(url)._pool

    async def post(self, url: str, body: bytes) -> Http1Response:
        return await self.endpoint(url).post(body)

    async def aclose(self) -> None:
        """Closes every connection of every pool; in-flight responses fail with `Http1ReadError`."""
        for pool in self._pools.values():
            pool.close()
