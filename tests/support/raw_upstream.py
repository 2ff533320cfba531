"""A scriptable raw HTTP server on loopback for the native HTTP/1.1 client's tests.

It runs in the test's own event loop: each accepted connection is handed to the test's
handler coroutine (the server, `reader`, `writer`, and the connection's number), which writes whatever
bytes the test needs (valid HTTP, split at awkward places, garbage, a reset). It counts
the connections it accepted and the ones the client closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[["RawUpstream", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
Answer = Callable[[bytes, bytes], bytes | None]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head (request line and headers) and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def header_of(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode("latin-1")
    return None


def ok(body: bytes = b'{"ok": true}', *, extra: bytes = b"") -> bytes:
    """A keep-alive 200 with a Content-Length body."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def chunked(*pieces: bytes, extra: bytes = b"") -> bytes:
    """A keep-alive 200 whose body is sent in these chunks."""
    out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
    for piece in pieces:
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


class RawUpstream:
    """``async with RawUpstream(handler) as server:`` then ``server.url``."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = "localhost" if self.tls is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/v1/chat/completions"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self.handler(self, reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def serve(self, reader: asyncio.StreamReader, answer: Answer) -> bytes:
        """Reads one request, records it; returns the answer's bytes (b"" when the client left)."""
        try:
            head, body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
            return b""
        self.requests.append((head, body))
        return answer(head, body) or b""

    async def client_gone(self, reader: asyncio.StreamReader, seconds: float = 2.0) -> bool:
        """Waits until the client closes its side (EOF or reset); False on timeout."""
        try:
            async with asyncio.timeout(seconds):
                data = await reader.read(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            data = b""
        if data == b"":
            self.closed_by_client += 1
            return True
        return False


def keep_alive(answer: Answer) -> Handler:
    """A handler answering every request of a connection with `answer` until the client leaves."""

    async def handler(server: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            data = await server.serve(reader, answer)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    return handler
