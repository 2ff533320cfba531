"""The SSE parser against what real servers send (comments, CRLF, split reads, multi-line data),
and the relay's batching heartbeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.infrastructure.http.sse import Heartbeat, batches_with_heartbeat
from app.infrastructure.llm.sse import SSEParser, SSETooLarge


def feed_all(parser: SSEParser, *pieces: bytes) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        out.extend(e.data for e in parser.feed(piece))
    out.extend(e.data for e in parser.close())
    return out


def test_events_are_split_on_blank_lines_and_comments_are_skipped() -> None:
    parser = SSEParser()
    data = b': keep-alive\n\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert feed_all(parser, data) == ['{"a":1}', "[DONE]"]
    assert parser.comments == 1


def test_crlf_and_lone_cr_line_endings() -> None:
    assert feed_all(SSEParser(), b"data: one\r\n\r\ndata: two\r\rdata: three\n\n") == ["one", "two", "three"]


def test_crlf_split_across_reads_is_one_line_ending() -> None:
    assert feed_all(SSEParser(), b"data: one\r", b"\n\r", b"\ndata: two\r\n", b"\r\n") == ["one", "two"]


def test_multi_line_data_joins_with_newline_and_space_after_colon_is_optional() -> None:
    assert feed_all(SSEParser(), b"data:first\ndata: second\n\n") == ["first\nsecond"]


def test_event_split_byte_by_byte() -> None:
    raw = b'event: message\nid: 7\ndata: {"x": "\xc3\xa9"}\n\n'
    parser = SSEParser()
    events = [e for i in range(len(raw)) for e in parser.feed(raw[i : i + 1])]
    assert [(e.event, e.id, e.data) for e in events] == [("message", "7", '{"x": "é"}')]


def test_a_pending_event_without_final_blank_line_is_dispatched_at_close() -> None:
    assert feed_all(SSEParser(), b"data: last") == ["last"]


def test_oversized_event_is_refused() -> None:
    parser = SSEParser(max_event_bytes=16)
    with pytest.raises(SSETooLarge):
        parser.feed(b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(SSETooLarge):
        SSEParser(max_event_bytes=16).feed(b"data: " + b"y" * 40)


# -- the relay's batching heartbeat (app/infrastructure/http/sse.py) ---------------------


async def test_batches_group_what_arrived_together_and_keep_order() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(5):
            yield i

    seen = [b async for b in batches_with_heartbeat(source(), interval=60)]
    assert all(isinstance(b, list) for b in seen)
    assert [i for b in seen if isinstance(b, list) for i in b] == [0, 1, 2, 3, 4]
    assert len(seen) < 5  # several items per write, not one each


async def test_batches_bound_the_read_ahead() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    seen = [b async for b in batches_with_heartbeat(source(), interval=60, max_batch=3)]
    assert max(len(b) for b in seen if isinstance(b, list)) <= 3
    assert [i for b in seen if isinstance(b, list) for i in b] == list(range(10))


async def test_heartbeat_while_the_source_is_silent_then_its_items() -> None:
    go = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        await go.wait()
        yield "late"

    relay = batches_with_heartbeat(source(), interval=0.01)
    assert isinstance(await relay.__anext__(), Heartbeat)
    go.set()
    rest = [b async for b in relay]
    assert ["late"] in rest


async def test_a_source_error_comes_after_the_items_before_it() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("upstream broke")

    got: list[int] = []

    async def consume() -> None:
        async for batch in batches_with_heartbeat(source(), interval=60):
            assert isinstance(batch, list)
            got.extend(batch)

    with pytest.raises(RuntimeError, match="upstream broke"):
        await consume()
    assert got == [1, 2]


async def test_consumer_leaving_closes_the_source() -> None:
    closed = asyncio.Event()
    never = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            yield 1
            await never.wait()
            yield 2
        finally:
            closed.set()

    relay = batches_with_heartbeat(source(), interval=60)
    assert await relay.__anext__() == [1]
    await relay.aclose()  # what a client disconnect does to the response's generator
    await asyncio.wait_for(closed.wait(), timeout=5)
    assert closed.is_set()


def test_lf_only_lines_split_anywhere_across_reads() -> None:
    # The split-in-C path (no \r): a line, and the blank line ending an event, cut at any byte.
    stream = b'data: {"a":1}\n\ndata: two\ndata: lines\n\n'
    for cut in range(1, len(stream)):
        assert feed_all(SSEParser(), stream[:cut], stream[cut:]) == ['{"a":1}', "two\nlines"], cut


def test_lf_only_line_over_the_cap_is_refused() -> None:
    parser = SSEParser(max_event_bytes=16)
    with pytest.raises(SSETooLarge):
        parser.feed(b"data: " + b"x" * 32)


@pytest.mark.parametrize(
    "pieces",
    [
        [b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'],
        [b'data: {"a":1}\n\ndata: {"b"', b":2}\n\n", b"data: [DONE]\n\n"],  # an event split across reads
        [b": ping\n\ndata: one\n\n", b"event: x\nid: 7\ndata: two\ndata: lines\n\n"],  # comments, fields, lines
        [b"data:no-space\n\n\n\ndata: after blank lines\n\n"],
        [b"data: crlf\r\n\r\ndata: mixed\n\n", b"data: back\n\n"],
        [b"data: a\n", b"\ndata: b\n\n"],  # the blank line comes in the next read
        [b'data: {"a":1}\n\ndata: tail without end'],  # the tail waits for close()
    ],
)
def test_feed_data_gives_the_data_feed_gives(pieces: list[bytes]) -> None:
    general, direct = SSEParser(), SSEParser()
    expected = [event.raw for piece in pieces for event in general.feed(piece)]
    got = [data for piece in pieces for data in direct.feed_data(piece)]
    assert got == expected
    assert [e.raw for e in direct.close()] == [e.raw for e in general.close()]
    assert direct.comments == general.comments


def test_feed_data_enforces_the_event_size_cap() -> None:
    with pytest.raises(SSETooLarge):
        SSEParser(max_event_bytes=10).feed_data(b"data: " + b"x" * 10 + b"\n\n")
    assert SSEParser(max_event_bytes=10).feed_data(b"data: " + b"x" * 9 + b"\n\n") == [b"x" * 9]
