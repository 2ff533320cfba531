"""A fast OpenAI-compatible mock upstream for the benchmark, in its own process.

Plain asyncio on uvloop with hand-written HTTP/1.1 (keep-alive, chunked streams): it must
never be the bottleneck. Behaviour by model name:
  bench-fast   answers at once (non-streaming JSON, or 20 SSE chunks + usage + [DONE])
  bench-slow   streams its 20 chunks `SLOW_CHUNK_SECONDS` apart (the held-streams test)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

CHUNKS = 20
SLOW_CHUNK_SECONDS = float(os.environ.get("BENCH_SLOW_CHUNK_SECONDS", "1.0"))

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-fast",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "word " * CHUNKS}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS},
    }
).encode()


def _chunk(model: str, delta: dict[str, object], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _stream_events(model: str) -> list[bytes]:
    events = [_chunk(model, {"role": "assistant", "content": ""}, None)]
    events += [_chunk(model, {"content": "word "}, None) for _ in range(CHUNKS - 1)]
    events.append(_chunk(model, {}, "stop"))
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS},
    }
    events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


_EVENTS = {name: _stream_events(name) for name in ("bench-fast", "bench-slow")}


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET"):
                payload = b'{"object":"list","data":[]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
                continue
            model = "bench-slow" if b'"bench-slow"' in body else "bench-fast"
            if b'"stream":true' in body.replace(b" ", b""):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for event in _EVENTS[model]:
                    writer.write(_chunked(event))
                    if model == "bench-slow":
                        await writer.drain()
                        await asyncio.sleep(SLOW_CHUNK_SECONDS)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(_COMPLETION), _COMPLETION)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(f"mock upstream on 127.0.0.1:{port} (started {time.time():.0f})", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    asyncio.run(main(int(sys.argv[1])))
