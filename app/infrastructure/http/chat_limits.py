"""The HTTP side of chat completion rate limits: settle the admission on every ending.

`AdmitChatCompletion` (application layer) decides before the upstream call; these helpers
hand the real usage to the `Admission` and make sure it is finished exactly once:

- non-streaming: `settle_answer` records the answer's ``usage.total_tokens``; an upstream
  error refunds everything (0), a client disconnect charges the prompt estimate; the
  endpoint finishes the admission once the response is sent;
- streaming, before the first chunk: `open_admitted` finishes the admission when opening
  fails (0) or the client leaves (prompt estimate);
- streaming, afterwards: `AdmittedStream` keeps the lease while the SSE body runs;
  `AdmittedStream.close`, once the response is over (or abandoned: client gone), closes the
  body and the upstream stream at once (instead of whenever the garbage collector gets to
  them) and settles with what was produced (`ChatStream.usage`).

The settlement is a Redis round trip: it runs after the last byte of the response is written,
so it is not part of the latency a client sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
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


async def finish_admission(admission: Admission, used_tokens: int | None = None) -> None:
    """`Admission.finish` from a request's own task. In a task being cancelled it runs shielded
    (a task of its own), so a second cancellation cannot cut it short; otherwise it is awaited
    directly, with no task of its own: the pipelined Redis client has queued the one command by
    the time the call first waits, so even a cancellation arriving then does not lose it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        await asyncio.shield(admission.finish(used_tokens))
    else:
        await admission.finish(used_tokens)


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
    """The SSE body of an admitted stream: keeps the lease while it runs; `close` settles with
    what was produced."""

    def __init__(self, admission: Admission, stream: ChatStream, events: AsyncIterator[Any]) -> None:
        self.admission = admission
        self._stream = stream
        self.body = events
        admission.keep_lease()

    async def close(self) -> None:
        """After the response: close the body (and so the upstream stream), then settle."""
        try:
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._stream.aclose()
        finally:
            await finish_admission(self.admission, self._stream.usage.total_tokens)
