"""CPU of the upstream client alone, per call, for each HTTP transport (`python -m bench.upstream_micro`).

`OpenAICompatibleClient.complete` (a JSON answer) and `.stream` (20 SSE chunks, usage,
``[DONE]``) against the benchmark's mock upstream (bench/mock_upstream.py, its own process,
pinned to core 1), from this process (uvloop, pinned to core 0), `concurrency` calls at a
time, on each transport in turn, interleaved over several rounds. CPU is this process's
``time.process_time()`` per completed call: the client's own cost (request, pool, parsing,
SSE, chunk decoding), without the gateway around it, so much less noisy than `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.persistence.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
TRANSPORTS = ("native", "aiohttp", "httpx")


async def measure(transport: str, port: int, *, stream: bool, concurrency: int, seconds: float) -> float:
    """Microseconds of CPU per call, after a short warm-up."""
    llm = OpenAICompatibleClient(
        "mock", f"http://127.0.0.1:{port}/v1", "bench-key", UpstreamPolicy(transport=transport)
    )
    body: dict[str, Any] = {"model": "bench-fast", "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    async def call() -> None:
        if stream:
            async for _ in llm.stream(body):
                pass
        else:
            await llm.complete(body)

    async def worker(until: float, counter: list[int]) -> None:
        while time.monotonic() < until:
            await call()
            counter[0] += 1

    try:
        await asyncio.gather(*(worker(time.monotonic() + 0.5, [0]) for _ in range(concurrency)))
        counter = [0]
        started = time.process_time()
        await asyncio.gather(*(worker(time.monotonic() + seconds, counter) for _ in range(concurrency)))
        spent = time.process_time() - started
    finally:
        await llm.aclose()
    return spent / counter[0] * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.upstream_micro")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    port = free_port()
    cores = os.cpu_count() or 1
    pin = ["taskset", "-c", "1"] if cores > 1 else []
    mock = subprocess.Popen(
        [*pin, sys.executable, str(ROOT / "bench" / "mock_upstream.py"), str(port)], stdout=subprocess.DEVNULL
    )
    try:
        if cores > 1:
            os.sched_setaffinity(0, {0})
        time.sleep(1.0)
        results: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for transport in TRANSPORTS:
                for stream in (False, True):
                    us = uvloop.run(
                        measure(transport, port, stream=stream, concurrency=args.concurrency, seconds=args.seconds)
                    )
                    results.setdefault((transport, stream), []).append(us)
        print(
            f"CPU µs per call of OpenAICompatibleClient (median of {args.rounds} rounds; all rounds), c={args.concurrency}"
        )
        print("| transport | complete() | stream() of 20 chunks |")
        print("|---|---|---|")
        for transport in TRANSPORTS:
            cells = []
            for stream in (False, True):
                runs = results[(transport, stream)]
                cells.append(f"{statistics.median(runs):.0f} ({', '.join(f'{r:.0f}' for r in runs)})")
            print(f"| {transport} | {cells[0]} | {cells[1]} |")
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
