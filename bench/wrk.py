"""Non-streaming load from wrk (a C load generator), where the machine has it.

wrk keeps `concurrency` keep-alive connections busy for the duration and reports latency
percentiles from its own HdrHistogram; a generated Lua script sets the POST body and
headers and prints one JSON summary line. Streams, bursts and held streams stay with the
Python generator (`bench/loadgen.py`), which can see the first streamed token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

MARKER = "WRK_JSON "

_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "not installed"
    completed = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (completed.stdout or completed.stderr).splitlines()[0].split(" [")[0].strip()


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def run_wrk(
    url: str, body: dict[str, Any], api_key: str | None, *, concurrency: int, seconds: float, pin: list[str]
) -> dict[str, float]:
    """One wrk run; the summary has the keys of `loadgen.Result.summary()` that apply."""
    path = wrk_path()
    if path is None:
        raise RuntimeError("wrk is not installed")
    auth = f'wrk.headers["Authorization"] = {_lua_string("Bearer " + api_key)}' if api_key else ""
    script = _SCRIPT.format(body=_lua_string(json.dumps(body)), auth=auth, marker=MARKER)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = Path(handle.name)
    duration = f"{max(1, round(seconds))}s"
    command = [
        *pin,
        path,
        "-t",
        "1",
        "-c",
        str(concurrency),
        "-d",
        duration,
        "--timeout",
        "10s",
        "-s",
        str(script_path),
    ]
    try:
        completed = subprocess.run(
            [*command, url],
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
    finally:
        script_path.unlink(missing_ok=True)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {completed.stdout[-300:]} {completed.stderr[-300:]}")
    raw = json.loads(line.removeprefix(MARKER))
    elapsed = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status_errors"]
    return {
        "count": ok,
        "errors": raw["errors"],
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
    }
