"""The SSE parser against what real servers send: comments, CRLF, split reads, multi-line data."""

from __future__ import annotations

import pytest

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
