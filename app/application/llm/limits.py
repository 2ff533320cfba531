"""The rate-limit step of chat completions: one admission before the upstream call, settled after.

`AdmitChatCompletion` runs the scope checks first (so a 403/404 charges nothing), then makes
the one `admit()` call (one Redis round trip) that checks and records the caller's requests
per minute, tokens per minute, daily budget and, for streams, a concurrent-stream lease.
The token reservation is the prompt estimate plus the completion tokens the request may use
(``max_tokens`` / ``max_completion_tokens``, lowered to the model's cap, else the cap, else a
configured default), times ``n``. The HTTP layer settles the reservation with the real usage
(`tokens_used`) when the answer ends, or with 0 when the upstream failed before producing
anything. See docs/rate-limits.md ("What is wired where").
"""

from __future__ import annotations

from app.application.llm.chunks import estimate_tokens, prompt_text
from app.application.llm.types import ChatRequest, JSONObject, ModelInfo, Usage
from app.application.llm.use_cases import CreateChatCompletion
from app.application.ratelimit import (
    Admission,
    CallerLimitDefaults,
    RateLimiter,
    RateLimitRequest,
    admit,
    policy_for_principal,
)
from app.domain.principal import Principal


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def completion_allowance(body: JSONObject, model: ModelInfo, default_max_tokens: int) -> int:
    """How many completion tokens one choice of this request may use, at most.

    The client's ``max_completion_tokens`` or ``max_tokens``, lowered to the largest cap among
    the model's targets (each target lowers it to its own cap, see `_upstream_body`); without
    a client value the cap; without a cap on every target the configured default.
    """
    requested = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
    caps = [target.max_tokens for target in model.targets]
    known = [c for c in caps if c is not None]
    cap = max(known) if known and len(known) == len(caps) else None
    if requested is not None:
        return min(requested, cap) if cap is not None else requested
    return cap if cap is not None else default_max_tokens


def token_reservation(request: ChatRequest, model: ModelInfo, default_max_tokens: int) -> int:
    """Prompt estimate + completion allowance times ``n``: what the request may cost at most (roughly)."""
    choices = _positive_int(request.body.get("n")) or 1
    completion = completion_allowance(request.body, model, default_max_tokens)
    return estimate_tokens(prompt_text(request.body)) + completion * choices


def tokens_used(answer: JSONObject) -> int | None:
    """Total tokens of a finished non-streaming answer (its ``usage``), or None if absent."""
    usage = Usage.from_json(answer.get("usage"))
    return None if usage is None else usage.total_tokens


class AdmitChatCompletion:
    """Admits one chat completion under its caller's limits, before anything goes upstream.

    API keys are limited per key (their own limits, else the key defaults), JWT callers per
    user (the user defaults). Raises `RateLimitRefused` (429, or ``insufficient_quota``) or,
    with the ``closed`` failure policy and Redis down, ``ServiceUnavailable`` (503); also the
    use case's own 403/404, checked first.
    """

    def __init__(
        self,
        chat: CreateChatCompletion,
        limiter: RateLimiter,
        *,
        api_keys: CallerLimitDefaults,
        users: CallerLimitDefaults,
        default_max_tokens: int,
    ) -> None:
        self._chat = chat
        self._limiter = limiter
        self._api_keys = api_keys
        self._users = users
        self._default_max_tokens = default_max_tokens

    async def __call__(self, principal: Principal, request: ChatRequest) -> Admission:
        model = self._chat.authorize(principal, request)  # 404 / 403 before any charge
        subject, policy = policy_for_principal(principal, api_keys=self._api_keys, users=self._users)
        tokens = token_reservation(request, model, self._default_max_tokens)
        return await admit(self._limiter, RateLimitRequest(subject, policy, tokens=tokens, stream=request.stream))


def prompt_estimate(request: ChatRequest) -> int:
    """The prompt's estimated tokens: what a request cut short before any answer is charged."""
    return estimate_tokens(prompt_text(request.body))
