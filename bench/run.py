"""`make bench`: the gateway's cost, measured against the same mock called directly.

    python -m bench.run            full run; prints a table and writes docs/benchmarks.md
    python -m bench.run --quick    the CI regression gate: CPU per request against
                                   bench/baseline.json, fails when it more than doubles

Layout on the 2-core machine: the gateway (`agent-api serve`, one uvicorn worker, API-key
auth, whatever limits the server enforces, usage capture on) is pinned to core 0; the mock upstream and this load
generator share core 1. CPU per request comes from the kernel's accounting of the gateway
process (utime + stime), the figure least disturbed by noise; latencies compare DIRECT
(client → mock) with THROUGH (client → gateway → mock) measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import profile_summary, relay_micro
from bench.loadgen import Result, build_request, hold_streams, run_burst, run_load
from bench.wrk import run_wrk, wrk_path, wrk_version
from tests.support.services import start_postgres, start_redis

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "baseline.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CORES = os.cpu_count() or 1
# Per-key limits far above anything the bench can send: limits are checked, never hit.
GENEROUS_LIMIT = 1_000_000_000


def free_port() -> int:
    from app.infrastructure.persistence.embedded import free_port as _free

    return _free()


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            pids.extend(process_tree(int(child)))
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE_SIZE for p in process_tree(pid))


def pin(cores: set[int]) -> list[str]:
    usable = {c for c in cores if c < CORES}
    return ["taskset", "-c", ",".join(map(str, sorted(usable)))] if usable and CORES > 1 else []


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def issue_api_key(base_url: str, email: str, password: str) -> str:
    """The bench key, issued through the public API so it carries explicit, generous limits.

    Whatever limits the server enforces (the Redis limiter included) are then on the
    measured path, but never the reason a request fails.
    """
    with httpx.Client(base_url=base_url, timeout=10) as client:
        login = client.post("/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        token = login.json()["access_token"]
        created = client.post(
            "/v1/api-keys",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "bench", "rpm_limit": GENEROUS_LIMIT, "tpm_limit": GENEROUS_LIMIT},
        )
        created.raise_for_status()
        key = created.json().get("key")
        if not isinstance(key, str) or not key.startswith("sk-"):
            raise RuntimeError("POST /v1/api-keys returned no key")
        return key


@dataclass
class Stack:
    gateway_pid: int
    gateway_port: int
    mock_port: int
    api_key: str
    mock_pid: int


def server_command(server: str, python: str, host: str, port: int) -> list[str]:
    """How the gateway is started: `agent-api serve` (uvicorn, uvloop, httptools), or granian."""
    if server == "granian":
        granian = str(Path(python).with_name("granian"))
        return [granian, "--interface", "asgi", "--factory", "--host", host, "--port", str(port), "--workers", "1",
                "--loop", "uvloop", "--http", "1", "--no-ws", "app.bootstrap:create_app"]  # fmt: skip
    return [python, "-m", "app", "serve"]


def granian_available() -> bool:
    return Path(sys.executable).with_name("granian").exists()


@contextmanager
def stack(server: str = "uvicorn", extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    postgres, redis = start_postgres(), start_redis()
    database_url = asyncio.run(postgres.create_database("agent_api_bench"))
    env = {
        **os.environ,
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "REDIS_KEY_PREFIX": f"bench-{secrets.token_hex(4)}:",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "API_KEY_PEPPER": secrets.token_urlsafe(48),
        "WORKERS": "1",
        # Limits stay on (the decision is part of the measured path) but never refuse the bench:
        # its key gets huge rpm/tpm when issued; concurrent streams per key are a setting.
        "RATE_LIMIT_KEY_MAX_STREAMS": "100000",
    }
    mock_port, gateway_port = free_port(), free_port()
    env.update(
        LLM_BASE_URL=f"http://127.0.0.1:{mock_port}/v1",
        LLM_API_KEY="bench-upstream-key",
        LLM_MODELS="bench-fast,bench-slow",
        HOST="127.0.0.1",
        PORT=str(gateway_port),
    )
    env.update(extra_env or {})
    python = sys.executable
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([python, "-m", "app", "migrate"], env=env, check=True, capture_output=True)
        email, password = "bench@example.com", secrets.token_urlsafe(16)
        subprocess.run(
            [python, "-m", "app", "create-admin", "--email", email, f"--password={password}"],
            env=env,
            check=True,
            capture_output=True,
        )
        mock = subprocess.Popen(
            [*pin({1}), python, str(ROOT / "bench" / "mock_upstream.py"), str(mock_port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        processes.append(mock)
        gateway = subprocess.Popen(
            [*pin({0}), *server_command(server, python, "127.0.0.1", gateway_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(gateway)
        wait_http(f"http://127.0.0.1:{gateway_port}/health")
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models")
        api_key = issue_api_key(f"http://127.0.0.1:{gateway_port}", email, password)
        yield Stack(gateway.pid, gateway_port, mock_port, api_key, mock.pid)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        asyncio.run(postgres.drop_database(database_url))
        postgres.stop()
        redis.stop()


def body(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say twenty words."}],
        "stream": stream,
        "max_tokens": 64,
    }


class Bench:
    def __init__(self, s: Stack) -> None:
        self.s = s

    def request(self, target: str, model: str, stream: bool) -> tuple[int, bytes]:
        port = self.s.gateway_port if target == "through" else self.s.mock_port
        key = self.s.api_key if target == "through" else None
        return port, build_request("127.0.0.1", port, "/v1/chat/completions", body(model, stream), key)

    async def load(self, target: str, *, stream: bool, concurrency: int, seconds: float) -> tuple[Result, float]:
        port, request = self.request(target, "bench-fast", stream)
        before = cpu_seconds(self.s.gateway_pid)
        result = await run_load("127.0.0.1", port, request, concurrency=concurrency, seconds=seconds)
        cpu = cpu_seconds(self.s.gateway_pid) - before
        return result, cpu

    async def nonstream(self, target: str, *, concurrency: int, seconds: float) -> tuple[dict[str, Any], float]:
        """Non-streaming load: wrk where installed (the C generator), else the Python one."""
        if wrk_path() is None:
            result, cpu = await self.load(target, stream=False, concurrency=concurrency, seconds=seconds)
            return {**result.summary(), "samples": result.error_samples}, cpu
        port = self.s.gateway_port if target == "through" else self.s.mock_port
        key = self.s.api_key if target == "through" else None
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        before = cpu_seconds(self.s.gateway_pid)
        summary = await asyncio.to_thread(
            run_wrk, url, body("bench-fast", False), key, concurrency=concurrency, seconds=seconds, pin=pin({1})
        )
        return {**summary, "samples": []}, cpu_seconds(self.s.gateway_pid) - before

    async def bursts(self, target: str, *, streams: int, rounds: int) -> list[Result]:
        results, _ = await self.measured_bursts(target, streams=streams, rounds=rounds)
        return results

    async def measured_bursts(self, target: str, *, streams: int, rounds: int) -> tuple[list[Result], float]:
        """`rounds` bursts of `streams` new connections, 0.5 s apart, and the gateway's CPU
        seconds during them (the pauses between them left out)."""
        port, request = self.request(target, "bench-fast", True)
        results, cpu = [], 0.0
        for _ in range(rounds):
            before = cpu_seconds(self.s.gateway_pid)
            results.append(await run_burst("127.0.0.1", port, request, streams=streams))
            cpu += cpu_seconds(self.s.gateway_pid) - before
            await asyncio.sleep(0.5)
        return results, cpu

    async def held_streams(self, streams: int, ramp_seconds: float) -> tuple[Result, int, int]:
        """`streams` slow streams (20 chunks, 1 s apart) opened over `ramp_seconds`, then all held open."""
        port, request = self.request("through", "bench-slow", True)
        baseline = rss_bytes(self.s.gateway_pid)
        release = asyncio.Event()
        task = asyncio.create_task(
            hold_streams("127.0.0.1", port, request, streams=streams, hold_until=release, ramp_seconds=ramp_seconds)
        )
        peak = baseline
        deadline = time.monotonic() + ramp_seconds + 6
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            peak = max(peak, rss_bytes(self.s.gateway_pid))
        release.set()
        result = await task
        return result, baseline, peak


# 1,000 slow streams, opened at 250 a second (a simultaneous arrival is what the bursts test):
# each lasts about 20 s, so all are open together from the fourth second on.
HELD_STREAMS = 1000
HELD_RAMP_SECONDS = 4.0


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # noqa: PLR0124 - NaN check


def row(name: str, d: dict[str, Any], t: dict[str, Any], cpu_ms: float, errors: float, *, stream: bool) -> list[str]:
    p50, p99 = ("ttft_p50_ms", "ttft_p99_ms") if stream else ("p50_ms", "p99_ms")
    return [name, fmt(d["rps"], 0), fmt(t["rps"], 0), fmt(d[p50]), fmt(t[p50]), fmt(d[p99]), fmt(t[p99]), fmt(cpu_ms),
            str(int(errors))]  # fmt: skip


async def full(s: Stack) -> tuple[list[list[str]], dict[str, Any]]:
    bench = Bench(s)
    await bench.load("through", stream=False, concurrency=8, seconds=2)  # warm-up: caches, pools, JIT-less paths
    rows: list[list[str]] = []
    facts: dict[str, Any] = {}
    facts["load_generator"] = f"wrk ({wrk_version()})" if wrk_path() else "bench/loadgen.py (wrk not installed)"
    mock_busy: list[float] = []  # the mock's share of its core during THROUGH: is it a bottleneck?
    for concurrency in (1, 16, 64):
        d, _ = await bench.nonstream("direct", concurrency=concurrency, seconds=4)
        mock_before, started = cpu_seconds(s.mock_pid), time.monotonic()
        t, cpu = await bench.nonstream("through", concurrency=concurrency, seconds=4)
        mock_busy.append((cpu_seconds(s.mock_pid) - mock_before) / (time.monotonic() - started))
        cpu_ms = cpu * 1000 / max(t["count"], 1)
        facts[f"nonstream_c{concurrency}"] = {"direct": d, "through": t, "cpu_ms": cpu_ms, "samples": t["samples"]}
        rows.append(row(f"non-stream c={concurrency}", d, t, cpu_ms, t["errors"], stream=False))
    for concurrency in (16, 64):
        direct, _ = await bench.load("direct", stream=True, concurrency=concurrency, seconds=4)
        mock_before, started = cpu_seconds(s.mock_pid), time.monotonic()
        through, cpu = await bench.load("through", stream=True, concurrency=concurrency, seconds=4)
        mock_busy.append((cpu_seconds(s.mock_pid) - mock_before) / (time.monotonic() - started))
        d, t = direct.summary(), through.summary()
        cpu_ms = cpu * 1000 / max(through.count, 1)
        facts[f"stream_c{concurrency}"] = {
            "direct": d,
            "through": t,
            "cpu_ms": cpu_ms,
            "samples": through.error_samples,
        }
        rows.append(row(f"stream(20) c={concurrency}", d, t, cpu_ms, t["errors"], stream=True))
    facts["mock_busy_max"] = max(mock_busy)
    held, before, peak = await bench.held_streams(HELD_STREAMS, HELD_RAMP_SECONDS)
    facts["held"] = {
        "errors": held.errors,
        "completed": held.count,
        "rss_before": before,
        "rss_peak": peak,
        "kib_per_stream": (peak - before) / 1024 / 1000,
        "samples": held.error_samples,
    }
    bursts = []
    direct_bursts = await bench.bursts("direct", streams=BURST_STREAMS, rounds=BURST_ROUNDS)
    through_bursts, burst_cpu = await bench.measured_bursts("through", streams=BURST_STREAMS, rounds=BURST_ROUNDS)
    for i, (direct_burst, through_burst) in enumerate(zip(direct_bursts, through_bursts, strict=True), 1):
        ds, ts = direct_burst.summary(), through_burst.summary()
        bursts.append(
            {
                "round": i,
                "direct_ttft_p99": ds["ttft_p99_ms"],
                "through_ttft_p50": ts["ttft_p50_ms"],
                "through_ttft_p99": ts["ttft_p99_ms"],
                "overhead_p99": ts["ttft_p99_ms"] - ds["ttft_p99_ms"],
                "errors": ts["errors"] + ds["errors"],
            }
        )
    facts["bursts"] = bursts
    facts["burst_cpu_ms_per_stream"] = burst_cpu * 1000 / (BURST_STREAMS * BURST_ROUNDS)
    return rows, facts


# Three back-to-back bursts of 150 streams, each stream on a new connection (the issue's test).
BURST_STREAMS = 150
BURST_ROUNDS = 3


def verdicts(f: dict[str, Any]) -> list[tuple[str, str, bool]]:
    c1, c64, s64 = f["nonstream_c1"], f["nonstream_c64"], f["stream_c64"]
    loads = ("nonstream_c1", "nonstream_c16", "nonstream_c64", "stream_c16", "stream_c64")
    load_errors = int(sum(f[name]["through"]["errors"] for name in loads))
    checks = [
        ("CPU per non-streaming request <= 2 ms", f"{c64['cpu_ms']:.2f} ms (c=64)", c64["cpu_ms"] <= 2),
        ("CPU per 20-chunk stream <= 4 ms", f"{s64['cpu_ms']:.2f} ms (c=64)", s64["cpu_ms"] <= 4),
        (
            "added p50 at c=1 <= 2 ms",
            f"{c1['through']['p50_ms'] - c1['direct']['p50_ms']:.2f} ms",
            c1["through"]["p50_ms"] - c1["direct"]["p50_ms"] <= 2,
        ),
        (
            "added p99 at c=1 <= 5 ms",
            f"{c1['through']['p99_ms'] - c1['direct']['p99_ms']:.2f} ms",
            c1["through"]["p99_ms"] - c1["direct"]["p99_ms"] <= 5,
        ),
        (">= 400 requests/s at c=64", f"{c64['through']['rps']:.0f}/s", c64["through"]["rps"] >= 400),
        (">= 200 streams/s at c=64", f"{s64['through']['rps']:.0f}/s", s64["through"]["rps"] >= 200),
        (
            "p99 <= 300 ms at c=64 (request; stream first token; whole stream)",
            f"{c64['through']['p99_ms']:.1f}; {s64['through']['ttft_p99_ms']:.1f}; {s64['through']['p99_ms']:.1f} ms",
            max(c64["through"]["p99_ms"], s64["through"]["ttft_p99_ms"], s64["through"]["p99_ms"]) <= 300,
        ),
        ("zero errors under load (every THROUGH load above)", f"{load_errors}", load_errors == 0),
        (
            "1,000 slow streams: zero errors",
            f"{f['held']['errors']} errors, {f['held']['completed']} completed",
            f["held"]["errors"] == 0,
        ),
        ("<= 64 KiB RSS per held stream", f"{f['held']['kib_per_stream']:.1f} KiB", f["held"]["kib_per_stream"] <= 64),
        (
            "burst TTFT overhead p99 <= 100 ms, every burst",
            ", ".join(f"{b['overhead_p99']:.0f} ms" for b in f["bursts"]),
            all(b["overhead_p99"] <= 100 and b["errors"] == 0 for b in f["bursts"]),
        ),
    ]
    return checks


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{CORES} cores ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_report(rows: list[list[str]], facts: dict[str, Any], checks: list[tuple[str, str, bool]]) -> str:
    header = "| scenario | DIRECT rps | THROUGH rps | DIRECT p50 / TTFT p50 (ms) | THROUGH p50 / TTFT p50 (ms) | DIRECT p99 / TTFT p99 (ms) | THROUGH p99 / TTFT p99 (ms) | gateway CPU ms per request | errors |"
    lines = [header, "|" + "---|" * 9]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines)
    verdict = "\n".join(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |" for name, value, ok in checks)
    held = facts["held"]
    bursts = "\n".join(
        f"| {b['round']} | {b['direct_ttft_p99']:.0f} | {b['through_ttft_p50']:.0f} | {b['through_ttft_p99']:.0f} | "
        f"{b['overhead_p99']:.0f} | {b['errors']} |"
        for b in facts["bursts"]
    )
    variants = "\n".join(
        f"| {v['name']} | {v['skipped']} | |"
        if "skipped" in v
        else f"| {v['name']} | {v['cpu_ms_per_request']:.2f} | {v['cpu_ms_per_stream']:.2f} |"
        for v in facts.get("variants", [])
    )
    profile = facts.get("profile_markdown")
    where = (
        "\n\n## Where the time goes (a target failed: py-spy of the gateway during that load)\n\n" + profile
        if profile
        else ""
    )
    return f"""# Benchmarks

Measured by `make bench` (`python -m bench.run`) on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")},
machine: {machine()}. The gateway (`agent-api serve` in production mode: one uvicorn worker,
uvloop + httptools, API-key auth with its Redis revocation check, Redis rate limits on, usage
capture on, the default INFO access log; the bench key's limits set far above the load, so
they are decided on every request and never refuse one) is pinned to core 0; the mock
upstream and the load generators share core 1. DIRECT is client → mock; THROUGH is client →
gateway → mock, in the same run. Non-streaming load: {facts["load_generator"]}; streams,
bursts and held streams: `bench/loadgen.py` (it sees the first streamed token). Gateway CPU
is the kernel's utime + stime of the gateway process per completed request. The mock used at
most {facts["mock_busy_max"] * 100:.0f} % of its core during any THROUGH load: it is not the
bottleneck.

{table}

1,000 slow streams (20 chunks 1 s apart, opened over {HELD_RAMP_SECONDS:.0f} s, then all open at once):
{held["completed"]} completed, {held["errors"]} errors; gateway RSS {held["rss_before"] / 2**20:.1f} MiB before,
{held["rss_peak"] / 2**20:.1f} MiB at peak ({held["kib_per_stream"]:.1f} KiB per stream).

Three back-to-back bursts of {BURST_STREAMS} streams, each on a new connection, right after the held
streams (gateway CPU {facts["burst_cpu_ms_per_stream"]:.2f} ms per stream):

| burst | DIRECT TTFT p99 (ms) | THROUGH TTFT p50 (ms) | THROUGH TTFT p99 (ms) | overhead p99 (ms) | errors |
|---|---|---|---|---|---|
{bursts}

## Targets (issue 9)

| target | measured | verdict |
|---|---|---|
{verdict}

## Choices measured in this run (gateway CPU ms; quick run: c=16, at least 400 answers after a warm-up)

| variant | per non-streaming request | per 20-chunk stream |
|---|---|---|
{variants}

The relay's JSON work per upstream chunk (`python -m bench.relay_micro`, microseconds, in this run):

{facts["relay_micro"]}{where}
"""


QUICK_SECONDS = 3.0
QUICK_MIN_ANSWERS = 400


async def quick(s: Stack) -> dict[str, float]:
    """Gateway CPU ms per non-streaming request and per 20-chunk stream, after a warm-up."""
    bench = Bench(s)
    await bench.load("through", stream=False, concurrency=8, seconds=1)
    await bench.load("through", stream=True, concurrency=8, seconds=0.5)
    figures: dict[str, float] = {}
    for name, stream in (("cpu_ms_per_request", False), ("cpu_ms_per_stream", True)):
        # At least QUICK_MIN_ANSWERS (a busy machine gives the gateway less of its core), at most 4 rounds.
        count, cpu = 0, 0.0
        for _ in range(4):
            result, spent = await bench.load("through", stream=stream, concurrency=16, seconds=QUICK_SECONDS)
            if result.errors:
                raise SystemExit(f"bench: {result.errors} errors in the quick run: {result.error_samples}")
            count, cpu = count + result.count, cpu + spent
            if count >= QUICK_MIN_ANSWERS:
                break
        if count < QUICK_MIN_ANSWERS // 4:
            raise SystemExit(f"bench: only {count} answers: too few to judge")
        figures[name] = cpu * 1000 / count
    return figures


async def spy(pid: int, out: Path, seconds: float, rate: int = 500) -> asyncio.subprocess.Process:
    """py-spy recording `pid` into `out` (collapsed stacks) for `seconds`; await its `wait()`."""
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),  # the venv's, whether or not it is on PATH
        "record", "--format", "raw", "--rate", str(rate), "--nonblocking", "--duration", str(max(1, round(seconds))),
        "--pid", str(pid), "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def profile(s: Stack, out: Path, seconds: float = 6.0) -> dict[str, Path]:
    """py-spy of the gateway during THROUGH load: non-streaming, streaming (c=16), then bursts."""
    bench = Bench(s)
    await bench.load("through", stream=False, concurrency=8, seconds=1)
    files: dict[str, Path] = {}
    for name, stream in (("nonstream", False), ("stream", True)):
        target = files[name] = out / f"{name}.txt"
        recorder = await spy(s.gateway_pid, target, seconds)
        result, cpu = await bench.load("through", stream=stream, concurrency=16, seconds=seconds)
        await recorder.wait()
        print(f"bench: {name}: {result.count} answers, {cpu * 1000 / max(result.count, 1):.3f} ms CPU each; {target}")
    target = files["bursts"] = out / "bursts.txt"
    recorder = await spy(s.gateway_pid, target, seconds)
    started = time.monotonic()
    while time.monotonic() - started < seconds - 1:
        await bench.bursts("through", streams=BURST_STREAMS, rounds=1)
    await recorder.wait()
    print(f"bench: bursts of {BURST_STREAMS} streams: {target}")
    return files


async def burst_rounds(s: Stack, rounds: int) -> list[tuple[float, float]]:
    """`rounds` pairs of bursts (DIRECT then THROUGH): (TTFT p99 overhead ms, gateway CPU ms per
    stream) of each. More rounds than `make bench`'s three, to see the spread of one setting."""
    bench = Bench(s)
    await bench.load("through", stream=False, concurrency=8, seconds=1)
    await bench.load("through", stream=True, concurrency=8, seconds=1)
    out = []
    for _ in range(rounds):
        (direct,) = await bench.bursts("direct", streams=BURST_STREAMS, rounds=1)
        (through,), cpu = await bench.measured_bursts("through", streams=BURST_STREAMS, rounds=1)
        overhead = through.summary()["ttft_p99_ms"] - direct.summary()["ttft_p99_ms"]
        out.append((overhead, cpu * 1000 / BURST_STREAMS))
    return out


def profile_for_failures(s: Stack, checks: list[tuple[str, str, bool]]) -> str | None:
    """When a target failed: where the gateway's time goes under the load it failed in."""
    failed = [name for name, _, ok in checks if not ok]
    if not failed or not Path(sys.executable).with_name("py-spy").exists():
        return None
    with tempfile.TemporaryDirectory() as directory:
        files = asyncio.run(profile(s, Path(directory)))
        parts = [f"Failed: {'; '.join(failed)}. Profiles of the same gateway right after the run:"]
        parts += [
            profile_summary.markdown(files[name], title, top=20)
            for name, title in (
                ("nonstream", "Non-streaming requests, c=16"),
                ("stream", "20-chunk streams, c=16"),
                ("bursts", f"Bursts of {BURST_STREAMS} streams"),
            )
        ]
        return "\n\n".join(parts)


VARIANTS: list[tuple[str, str, dict[str, str]]] = [
    ("uvicorn (uvloop, httptools) + native HTTP/1.1 client [production]", "uvicorn", {"LLM_HTTP_TRANSPORT": "native"}),
    ("uvicorn (uvloop, httptools) + httpx over aiohttp", "uvicorn", {"LLM_HTTP_TRANSPORT": "aiohttp"}),
    ("uvicorn (uvloop, httptools) + httpx default transport (httpcore)", "uvicorn", {"LLM_HTTP_TRANSPORT": "httpx"}),
    ("granian (uvloop, HTTP/1) + native HTTP/1.1 client", "granian", {"LLM_HTTP_TRANSPORT": "native"}),
    (
        "production, but redis-py on the hot path (REDIS_HOT_PATH_CLIENT=redis-py)",
        "uvicorn",
        {"REDIS_HOT_PATH_CLIENT": "redis-py"},
    ),
    (
        "production, but CPython's garbage collector as it comes (GC_YOUNG_THRESHOLD=0)",
        "uvicorn",
        {"GC_YOUNG_THRESHOLD": "0"},
    ),
]


def compare_variants() -> list[dict[str, Any]]:
    """The ASGI server, the upstream transport, the hot path's Redis client and the garbage
    collector's tuning, each measured by the quick run, in this run."""
    out: list[dict[str, Any]] = []
    for name, server, extra in VARIANTS:
        if server == "granian" and not granian_available():
            out.append({"name": name, "skipped": "granian is not installed in the venv"})
            continue
        try:
            with stack(server, extra) as s:
                out.append({"name": name, **asyncio.run(quick(s))})
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - one variant failing must not lose the run
            out.append({"name": name, "skipped": f"failed: {exc}"})
    return out


def over_limit(figures: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[str]:
    """The figures above ``baseline x tolerance``, printed with their limits."""
    over = []
    for name, value in figures.items():
        limit = baseline[name] * tolerance
        print(f"bench: {name} {value:.3f} (baseline {baseline[name]:.3f}, limit {limit:.3f})")
        if value > limit:
            over.append(name)
    return over


# A real regression costs more CPU in every attempt; a noisy neighbour rarely in three.
GATE_ATTEMPTS = 3


def gate(s: Stack, baseline: dict[str, float], tolerance: float) -> bool:
    for attempt in range(1, GATE_ATTEMPTS + 1):
        over = over_limit(asyncio.run(quick(s)), baseline, tolerance)
        if not over:
            print(f"bench: within {tolerance:g}x the baseline (attempt {attempt})")
            return True
        print(f"bench: above the limit in attempt {attempt}: {', '.join(over)}")
    print(f"bench: REGRESSION: gateway CPU above {tolerance:g}x the baseline in {GATE_ATTEMPTS} attempts")
    return False


def write_baseline(s: Stack) -> None:
    # The median of three runs: one lucky (quiet machine) run would make the gate flaky.
    runs = [asyncio.run(quick(s)) for _ in range(3)]
    record: dict[str, Any] = {k: round(sorted(run[k] for run in runs)[1], 3) for k in runs[0]}
    record["measured"] = datetime.now(UTC).isoformat(timespec="seconds")
    record["machine"] = machine()
    BASELINE.write_text(json.dumps(record, indent=2) + "\n")
    print(f"bench: baseline written: {record}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--quick", action="store_true", help="CI regression gate on CPU per request")
    parser.add_argument("--write-baseline", action="store_true", help="record the quick figures as the baseline")
    parser.add_argument("--tolerance", type=float, default=2.0, help="the gate fails above baseline x this")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the gateway under load into DIR, then stop")
    parser.add_argument("--bursts", type=int, metavar="N", help="N rounds of bursts only: overhead and CPU each")
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if CORES > 1:
        os.sched_setaffinity(0, {1})
    with stack() as s:
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            for name, path in asyncio.run(profile(s, Path(args.profile))).items():
                print(profile_summary.markdown(path, name, top=30), end="\n\n")
            return 0
        if args.write_baseline:
            write_baseline(s)
            return 0
        if args.bursts:
            results = asyncio.run(burst_rounds(s, args.bursts))
            overheads, cpus = sorted(r[0] for r in results), sorted(r[1] for r in results)
            print("bench: TTFT p99 overhead per round (ms):", " ".join(f"{o:.0f}" for o, _ in results))
            print(f"bench: median {overheads[len(results) // 2]:.0f} ms, worst {overheads[-1]:.0f} ms; gateway CPU per"
                  f" stream median {cpus[len(results) // 2]:.2f} ms")  # fmt: skip
            return 0
        if args.quick:
            return 0 if gate(s, json.loads(BASELINE.read_text()), args.tolerance) else 1
        rows, facts = asyncio.run(full(s))
        checks = verdicts(facts)
        facts["profile_markdown"] = profile_for_failures(s, checks)
    facts["variants"] = compare_variants()
    facts["relay_micro"] = relay_micro.table()
    report = write_report(rows, facts, checks)
    notes = ROOT / "bench" / "notes.md"
    if notes.exists():  # the hand-written part: choices, profiles, what the numbers mean
        report += "\n" + notes.read_text()
    Path(args.report).write_text(report)
    print(report)
    (ROOT / "bench" / "last-run.json").write_text(json.dumps(facts, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
