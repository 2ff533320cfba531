"""A minimal HTTP/1.1 client on asyncio streams, for load tests where httpx's own CPU cost would
dominate a 2-core machine (thousands of requests in a few seconds).

One request per connection or keep-alive on an opened `RawConnection`; bodies by
``Content-Length`` (what the app sends for JSON) or read to EOF (``Connection: close``, SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx


@dataclass
class RawResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def encode_request(method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(payload)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def read_head(reader: asyncio.StreamReader) -> tuple[int, httpx.Headers]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    pairs = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in head[1:] if line)]
    return status, httpx.Headers(pairs)


class RawConnection:
    """One keep-alive connection to a server base URL (``http://127.0.0.1:port``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> RawConnection:
        parts = urlsplit(base)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> RawResponse:
        self.writer.write(request)
        status, headers = await read_head(self.reader)
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return RawResponse(status, headers, content)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
