"""The upstream LLM misbehaving at the TCP level, between the app and a real (fake) upstream.

Each test names its pass criterion. Common to all: never a 500, never a hang, and the
contract's error shape."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.faults.conftest import FaultyUpstream
from tests.support.fake_upstream import UpstreamScript
from tests.support.tcp_proxy import Faults

LONG = UpstreamScript(words=[f"word{i}" for i in range(60)], chunk_delay=0.02)


def sse_events(text: str) -> list[Any]:
    return [
        line.removeprefix("data: ") if line == "data: [DONE]" else json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


async def test_upstream_refusing_connections_is_a_502_after_retries(faulty: FaultyUpstream) -> None:
    """Pass: connection refused on every attempt → 502 upstream_error within 2 s."""
    faulty.proxy.stop()
    started = time.monotonic()
    response = await faulty.chat()
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "upstream_error"
    assert time.monotonic() - started < 2


async def test_upstream_slow_to_first_byte_is_a_504(faulty: FaultyUpstream) -> None:
    """Pass: no first byte within the first-byte timeout (0.8 s) → 504 upstream_timeout, not a hang."""
    faulty.proxy.faults = Faults(first_byte_delay=5.0)
    started = time.monotonic()
    response = await faulty.chat(stream=True)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 4


async def test_upstream_stalling_mid_stream_ends_with_an_error_event(faulty: FaultyUpstream) -> None:
    """Pass: the stream began (200), the upstream goes silent → an in-band upstream_timeout error
    chunk after the idle timeout, then [DONE]; the content already relayed stays relayed."""
    faulty.upstream.reset(LONG)
    faulty.proxy.faults = Faults(stall_after_bytes=1500)
    started = time.monotonic()
    response = await faulty.chat(stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_timeout"
    assert any(e != "[DONE]" and e.get("choices") for e in events[:-2]), "no content before the stall"
    assert time.monotonic() - started < 5


async def test_upstream_resetting_mid_stream_ends_with_an_error_event(faulty: FaultyUpstream) -> None:
    """Pass: the connection is reset after some content → 200 stream ending with an
    upstream_error chunk and [DONE]; nothing is retried after the first byte."""
    faulty.upstream.reset(LONG)
    faulty.proxy.faults = Faults(reset_after_bytes=1500)
    response = await faulty.chat(stream=True)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "upstream_error"
    assert faulty.upstream.request_count == 1, "a request was retried after the first byte"


async def test_upstream_answering_garbage_is_a_502(faulty: FaultyUpstream) -> None:
    """Pass: bytes that are not HTTP → 502 upstream_error (after the retries), no 500."""
    faulty.proxy.faults = Faults(garbage=b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
    for stream in (False, True):
        response = await faulty.chat(stream=stream)
        assert response.status_code == 502, response.text
        assert response.json()["error"]["type"] == "upstream_error"


async def test_upstream_recovers_when_the_fault_clears(faulty: FaultyUpstream) -> None:
    """Pass: after a fault, the next request with a healthy upstream succeeds (no poisoned pool)."""
    faulty.proxy.faults = Faults(reset_after_bytes=10)
    assert (await faulty.chat()).status_code == 502
    faulty.proxy.faults = Faults()
    response = await faulty.chat()
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
