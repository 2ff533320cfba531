"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1, in its own thread.

Tests script what it answers (`UpstreamScript`): content, chunk count, delays, status codes,
``Retry-After``, tool calls (parallel too), provider quirks (repeated tool-call ids and names,
ids changing per chunk, no usage, no ``[DONE]``), garbage events, an in-band error event and
a mid-stream abort. It counts the requests it got and the client disconnects it saw while
streaming, and keeps each request's headers and JSON body.

It speaks just enough HTTP/1.1 (one request per connection, ``Connection: close``), which is
exactly what makes disconnects observable: the client closing the socket is EOF here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.infrastructure.persistence.embedded import free_port

T = TypeVar("T")


@dataclass
class UpstreamScript:
    status: int = 200
    retry_after: str | None = None
    retry_after_ms: str | None = None
    error_body: bytes | None = None
    words: list[str] = field(default_factory=lambda: ["Hello", "from", "the", "fake", "upstream."])
    # Streamed as `delta.reasoning_content` before the words (DeepSeek / vLLM style).
    reasoning: list[str] = field(default_factory=list)
    # (name, arguments JSON) per tool call; more than one = parallel tool calls.
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    abort_after_chunks: int | None = None
    garbage_after_chunks: int | None = None
    error_event_after_chunks: int | None = None
    repeat_tool_call_fields: bool = False
    vary_ids: bool = False
    no_usage: bool = False
    no_done: bool = False
    no_finish: bool = False
    empty_stream: bool = False
    crlf: bool = False
    comments: bool = True
    usage: tuple[int, int] = (11, 7)
    # Answer only once this is set (keeps a whole burst in flight at once).
    hold: threading.Event | None = None


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.default = UpstreamScript()
        self.queue: list[UpstreamScript] = []
        self.requests: list[SeenRequest] = []
        self.disconnects = 0
        self.completed_streams = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = self._call(self._start())

    # -- control (called from tests) ------------------------------------------------------

    def reset(self, default: UpstreamScript | None = None, *queue: UpstreamScript) -> None:
        with self._lock:
            self.default = default or UpstreamScript()
            self.queue = list(queue)
            self.requests = []
            self.disconnects = 0
            self.completed_streams = 0

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def wait_for(self, predicate: Any, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    def close(self) -> None:
        if self._server is not None:
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- server ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _next_script(self) -> UpstreamScript:
        with self._lock:
            return self.queue.pop(0) if self.queue else self.default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body_bytes = await reader.readexactly(int(headers.get("content-length", "0")))
            body = json.loads(body_bytes) if body_bytes else {}
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            writer.close()
            return
        script = self._next_script()
        with self._lock:
            self.requests.append(SeenRequest(path=path, headers=headers, body=body))
        try:
            while script.hold is not None and not script.hold.is_set():  # noqa: ASYNC110 - set by another thread
                await asyncio.sleep(0.01)
            if script.first_byte_delay and await self._client_gone(reader, script.first_byte_delay):
                self.disconnects += 1
                return
            if script.status != 200:
                await self._error(writer, script)
            elif body.get("stream"):
                await self._stream(reader, writer, script, body)
            else:
                await self._json(writer, script, body)
        except ConnectionError:
            self.disconnects += 1
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _client_gone(reader: asyncio.StreamReader, seconds: float) -> bool:
        """Waits `seconds`; True as soon as the client closes its side."""
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except TimeoutError:
            return False
        return data == b""

    async def _error(self, writer: asyncio.StreamWriter, script: UpstreamScript) -> None:
        body = (
            script.error_body
            or json.dumps(
                {"error": {"message": "fake upstream failure, key sk-upstream-secret", "type": "x", "code": None}}
            ).encode()
        )
        extra = ""
        if script.retry_after is not None:
            extra += f"Retry-After: {script.retry_after}\r\n"
        if script.retry_after_ms is not None:
            extra += f"retry-after-ms: {script.retry_after_ms}\r\n"
        writer.write(
            (
                f"HTTP/1.1 {script.status} Error\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()

    async def _json(self, writer: asyncio.StreamWriter, script: UpstreamScript, body: dict[str, Any]) -> None:
        n = int(body.get("n") or 1)
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(script.words) or None}
        if script.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_fake_{i}", "type": "function", "function": {"name": name, "arguments": args}}
                for i, (name, args) in enumerate(script.tool_calls)
            ]
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model"),
            "choices": [
                {"index": i, "message": message, "finish_reason": "tool_calls" if script.tool_calls else "stop"}
                for i in range(n)
            ],
        }
        if not script.no_usage:
            p, c = script.usage
            answer["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        data = json.dumps(answer).encode()
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    def _events(self, script: UpstreamScript, body: dict[str, Any]) -> list[dict[str, Any]]:
        n = int(body.get("n") or 1)
        chunks: list[dict[str, Any]] = []

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            cid = f"chatcmpl-fake-{len(chunks)}" if script.vary_ids else "chatcmpl-fake"
            return {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                    "model": body.get("model"), "choices": choices, **extra}  # fmt: skip

        chunks.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}} for i in range(n)]))
        for pos, thought in enumerate(script.reasoning):
            piece = thought if pos == 0 else " " + thought
            delta = {"reasoning_content": piece}
            chunks.append(chunk([{"index": i, "delta": delta, "finish_reason": None} for i in range(n)]))
        for pos, word in enumerate(script.words):
            piece = word if pos == 0 else " " + word
            chunks.append(chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None} for i in range(n)]))
        for call_index, (name, args) in enumerate(script.tool_calls):
            half = len(args) // 2
            for part, text in enumerate((args[:half], args[half:])):
                call: dict[str, Any] = {"index": call_index, "function": {"arguments": text}}
                if part == 0 or script.repeat_tool_call_fields:
                    call.update(id=f"call_fake_{call_index}", type="function")
                    call["function"]["name"] = name
                chunks.append(chunk([{"index": i, "delta": {"tool_calls": [call]}} for i in range(n)]))
        if not script.no_finish:
            finish = "tool_calls" if script.tool_calls else "stop"
            chunks.append(chunk([{"index": i, "delta": {}, "finish_reason": finish} for i in range(n)]))
        if not script.no_usage and (body.get("stream_options") or {}).get("include_usage"):
            p, c = script.usage
            chunks.append(chunk([], usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}))
        return chunks

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: UpstreamScript, body: dict[str, Any]
    ) -> None:
        nl = "\r\n" if script.crlf else "\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        if script.empty_stream:
            return
        if script.comments:
            writer.write(f": OPENROUTER PROCESSING{nl}{nl}".encode())
        events = self._events(script, body)
        for position, event in enumerate(events):
            if script.abort_after_chunks is not None and position == script.abort_after_chunks:
                writer.transport.abort()
                return
            if script.garbage_after_chunks is not None and position == script.garbage_after_chunks:
                writer.write(f"data: {{not json at all{nl}{nl}".encode())
            if script.error_event_after_chunks is not None and position == script.error_event_after_chunks:
                payload = {"error": {"message": "upstream exploded, key sk-upstream-secret", "code": 500}}
                writer.write(f"data: {json.dumps(payload)}{nl}{nl}".encode())
                await writer.drain()
                return
            writer.write(f"data: {json.dumps(event)}{nl}{nl}".encode())
            await writer.drain()
            if script.chunk_delay and await self._client_gone(reader, script.chunk_delay):
                self.disconnects += 1
                return
        if not script.no_done:
            writer.write(f"data: [DONE]{nl}{nl}".encode())
        await writer.drain()
        self.completed_streams += 1
