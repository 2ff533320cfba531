"""The HTTP side of chat completion rate limits: settle the admission on every ending.

`AdmitChatCompletion` (application layer) decides before the upstream call; these helpers
hand the real usage to the `Admission` and make sure it is finished exactly once:

- non-streaming: `settle_answer` records the answer's ``usage.total_tokens``; an upstream
  error refunds everything (0), a client disconnect charges the prompt estimate;
- streaming, before the first chunk: `open_admitted` finishes the admission when opening
  fails (0) or the client leaves (prompt estimate);
- streaming, afterwards: `AdmittedStream.relay` runs the SSE events inside ``async with
  admission`` (the lease is renewed while it runs, released on every ending) and settles with
  what was produced (`ChatStream.usage`); `release_unsent_stream` (an ``after_response`` hook)
  closes the body once the response is over: a body that never started (the client left in
  between) finishes the admission there, and a body abandoned mid-stream (client gone while
  a chunk was being sent) is closed at once instead of whenever the garbage collector gets to
  it (a reference cycle could delay that for longer than any test or client waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any

from litestar import Request

from app.application.llm.limits import prompt_estimate, tokens_used
from app.application.llm.types import ChatRequest, JSONObject
from app.application.llm.use_cases import ChatStream
from app.application.ratelimit import Admission
from app.domain.errors import DomainError

_STATE_KEY = "admitted_stream"


async def settle_answer(admission: Admission, chat: ChatRequest, work: Coroutine[Any, Any, JSONObject]) -> JSONObject:
    """Runs a non-streaming completion and reports its usage to the admission."""
    try:
        answer = await work
    except DomainError:
        admission.used_tokens = 0  # the upstream produced nothing for us: refund the reservation
        raise
    except asyncio.CancelledError:
        admission.used_tokens = prompt_estimate(chat)  # the prompt went upstream; the answer is unknown
        raise
    admission.used_tokens = tokens_used(answer)
    return answer


async def open_admitted(
    admission: Admission, chat: ChatRequest, opening: Coroutine[Any, Any, ChatStream]
) -> ChatStream:
    """Opens a stream (up to its first chunk); finishes the admission if that fails or is cancelled."""
    try:
        return await opening
    except asyncio.CancelledError:
        await asyncio.shield(admission.finish(used_tokens=prompt_estimate(chat)))
        raise
    except BaseException:
        await asyncio.shield(admission.finish(used_tokens=0))
        raise


class AdmittedStream:
    """The SSE body of an admitted stream: runs inside the admission, settles with what was produced."""

    def __init__(self, admission: Admission, stream: ChatStream, events: AsyncIterator[Any]) -> None:
        self.admission = admission
        self._stream = stream
        self._events = events
        self.started = False
        self.body = self._relay()

    def attach(self, request: Request[Any, Any, Any]) -> AdmittedStream:
        """Remember it on the request, for `release_unsent_stream`."""
        setattr(request.state, _STATE_KEY, self)
        return self

    async def _relay(self) -> AsyncGenerator[Any]:
        self.started = True
        async with self.admission:  # renews the lease while streaming; settles + releases on every exit
            try:
                async for event in self._events:
                    yield event
            finally:
                self.admission.used_tokens = self._stream.usage.total_tokens
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def close(self) -> None:
        """After the response: finish an unsent body's admission, close an abandoned one."""
        if not self.started:
            await asyncio.shield(self.admission.finish(used_tokens=self._stream.usage.total_tokens))
        elif not self.admission.finished:
            await self.body.aclose()


async def release_unsent_stream(request: Request[Any, Any, Any]) -> None:
    """``after_response`` hook: a stream whose body never started still gives its lease back."""
    admitted = getattr(request.state, _STATE_KEY, None)
    if isinstance(admitted, AdmittedStream):
        await admitted.close()
