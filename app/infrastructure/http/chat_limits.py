"""The HTTP side of chat completion rate limits: settle the admission on every ending.

`AdmitChatCompletion` (application layer) decides before the upstream call; these helpers
hand the real usage to the `Admission` and make sure it is finished exactly once:

- non-streaming: `settle_answer` records the answer's ``usage.total_tokens``; an upstream
  error refunds everything (0), a client disconnect charges the prompt estimate;
- streaming, before the first chunk: `open_admitted` finishes the admission when opening
  fails (0) or the client leaves (prompt estimate);
- streaming, afterwards: `AdmittedStream.body` runs the SSE events inside ``async with
  admission`` (the lease is renewed while it runs, released on every ending) and settles with
  what was produced (`ChatStream.usage`); `AdmittedStream.close`, once the response is over,
  finishes the admission of a body that never started (the client left in between) and
  closes a body abandoned mid-stream (client gone while a chunk was being sent) at once
  instead of whenever the garbage collector gets to it (a reference cycle could delay that
  for longer than any test or client waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any

from app.application.llm.limits import prompt_estimate, tokens_used
from app.application.llm.types import ChatRequest, JSONObject
from app.application.llm.use_cases import ChatStream
from app.application.ratelimit import Admission
from app.domain.errors import DomainError


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
