"""An incremental Server-Sent Events parser, lenient where real servers are sloppy.

Follows the WHATWG event-stream rules: lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (also when a
``\\r\\n`` pair is split across network reads); lines starting with ``:`` are comments;
several ``data:`` lines of one event join with ``\\n``; a blank line dispatches the event.
At end of input a pending event is dispatched too (some servers omit the final blank line).
"""

from __future__ import annotations

from dataclasses import dataclass


class SSETooLarge(ValueError):
    """One event (or one line) exceeded the size cap."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event; ``raw`` is its data as bytes (the ``data:`` lines joined with ``\\n``): a JSON
    chunk is relayed from these bytes without decoding them to text first."""

    raw: bytes
    event: str | None = None
    id: str | None = None

    @property
    def data(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


class SSEParser:
    def __init__(self, max_event_bytes: int = 1024 * 1024) -> None:
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._skip_lf = False
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if b"\r" in chunk or self._skip_lf:
            return self._feed_any(chunk)
        # The common case (lines end in \n only): split in C instead of walking every byte.
        events: list[SSEEvent] = []
        if self._buffer:
            self._buffer += chunk
            lines = bytes(self._buffer).split(b"\n")
        else:
            lines = chunk.split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._line(line, events)
        self._buffer = bytearray(rest)
        if len(self._buffer) > self._max:
            raise SSETooLarge("an event-stream line exceeds the size cap")
        return events

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """The data of each event `chunk` completes (the events' names and ids left out: what
        an OpenAI-compatible stream needs), by the same rules as `feed`.

        The common shape (events of one ``data: ...`` line, ``\\n`` endings, nothing pending)
        is cut out of the bytes directly: a stream's worth of events per read, without a line
        or event object each. Anything else in a read goes through `feed`.
        """
        if self._buffer or self._data or self._skip_lf or self._event is not None or b"\r" in chunk:
            return [event.raw for event in self.feed(chunk)]
        blocks = chunk.split(b"\n\n")
        tail = blocks.pop()  # an event not finished in this read (usually empty)
        out: list[bytes] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                if len(block) - 6 >= self._max:
                    raise SSETooLarge("an event-stream event exceeds the size cap")
                out.append(block[6:])
            else:  # comments, several lines, other fields: the general rules, this event's blank line included
                out += [event.raw for event in self.feed(block + b"\n\n")]
        if tail:
            out += [event.raw for event in self.feed(tail)]
        return out

    def _feed_any(self, chunk: bytes) -> list[SSEEvent]:
        """Any line ending (\n, \r\n, \r, also a \r\n pair split across reads), byte by byte."""
        events: list[SSEEvent] = []
        start = 0
        if self._skip_lf and chunk[:1] == b"\n":
            start = 1
        self._skip_lf = False
        position = start
        length = len(chunk)
        while position < length:
            byte = chunk[position]
            if byte in (0x0A, 0x0D):
                self._buffer += chunk[start:position]
                self._line(bytes(self._buffer), events)
                self._buffer.clear()
                if byte == 0x0D:
                    if position + 1 < length and chunk[position + 1] == 0x0A:
                        position += 1
                    elif position + 1 == length:
                        self._skip_lf = True
                position += 1
                start = position
                continue
            position += 1
        self._buffer += chunk[start:]
        if len(self._buffer) > self._max:
            raise SSETooLarge("an event-stream line exceeds the size cap")
        return events

    def close(self) -> list[SSEEvent]:
        """End of input: the last line and a pending event, if any."""
        events: list[SSEEvent] = []
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        if raw[:1] == b":":
            self.comments += 1
            return
        name, sep, value = raw.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise SSETooLarge("an event-stream event exceeds the size cap")
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        elif name == b"id":
            self._id = value.decode("utf-8", errors="replace")
        # "retry" and unknown fields are ignored, as the spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            raw = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append(SSEEvent(raw=raw, event=self._event, id=self._id))
        self._data = []
        self._data_size = 0
        self._event = None
