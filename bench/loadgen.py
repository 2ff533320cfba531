"""A small keep-alive HTTP/1.1 load generator (asyncio + uvloop) that measures what the
benchmark needs: per-request latency, time to first streamed byte, errors.

Each of `concurrency` workers holds one connection and sends requests back to back until
the deadline or the request budget. It runs in its own process, pinned to its own core.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return {
            "count": self.count,
            "errors": self.errors,
            "rps": self.count / self.elapsed if self.elapsed else 0.0,
            "p50_ms": pct(self.latencies, 0.50),
            "p99_ms": pct(self.latencies, 0.99),
            "mean_ms": statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan"),
            "ttft_p50_ms": pct(self.ttfts, 0.50),
            "ttft_p99_ms": pct(self.ttfts, 0.99),
        }


def build_request(host: str, port: int, path: str, body: dict[str, object], api_key: str | None) -> bytes:
    payload = json.dumps(body).encode()
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: keep-alive",
    ]
    if api_key:
        headers.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader, started: float) -> tuple[int, float | None, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lowered = head.lower()
    first_byte: float | None = None
    body = bytearray()
    if b"transfer-encoding: chunked" in lowered:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if first_byte is None and b"data:" in data and b'"content"' in data:
                first_byte = time.perf_counter() - started
            body += data[:-2]
    else:
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body += await reader.readexactly(length)
    return status, first_byte, bytes(body)


async def _worker(host: str, port: int, request: bytes, deadline: float, budget: list[int], result: Result) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(request)
            status, ttft, body = await _read_response(reader, started)
            latency = time.perf_counter() - started
            if status != 200 or b'"error"' in body[:200] or b'data: {"error"' in body:
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(f"{status} {body[:160]!r}")
                continue
            result.latencies.append(latency)
            if ttft is not None:
                result.ttfts.append(ttft)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            result.errors += 1
            if len(result.error_samples) < 3:
                result.error_samples.append(repr(exc))
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    seconds: float = 5.0,
    max_requests: int = 10**9,
) -> Result:
    result = Result()
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(host, port, request, deadline, budget, result) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


async def run_burst(host: str, port: int, request: bytes, *, streams: int) -> Result:
    """`streams` requests started at the same instant, each on its own new connection."""
    result = Result()
    started = time.perf_counter()
    await asyncio.gather(*(_worker(host, port, request, time.perf_counter() + 60, [1], result) for _ in range(streams)))
    result.elapsed = time.perf_counter() - started
    return result


async def hold_streams(
    host: str, port: int, request: bytes, *, streams: int, hold_until: asyncio.Event, ramp_seconds: float = 0.0
) -> Result:
    """Open `streams` slow streams, evenly over `ramp_seconds`, and read them to the end (RSS per stream).

    The streams last far longer than the ramp, so all of them are open at once at its end.
    """
    result = Result()
    started = time.perf_counter()

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        await _worker(host, port, request, time.perf_counter() + 120, [1], result)

    tasks = [asyncio.create_task(one(i * ramp_seconds / streams)) for i in range(streams)]
    await hold_until.wait()
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    return result
