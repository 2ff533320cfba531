"""GCRA (generic cell rate algorithm): the arithmetic of the request and token limits.

A limit of ``L`` units per window ``W`` has an emission interval ``T = W / L`` and a burst
tolerance of ``W``. The only state is the theoretical arrival time ``tat``: the moment the
bucket is full again. A cost ``c`` passes when ``max(tat, now) + c*T - W <= now`` and then
moves ``tat`` there. It is a token bucket of capacity ``L`` refilled continuously at
``L / W``, kept as one number.

Arithmetic is exact (fractions of microseconds), so the last unit of a burst is never lost
or doubled by rounding. The Redis script does the same in integers (units of ``1/L`` µs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

MICROS = 1_000_000


def micros(seconds: float) -> Fraction:
    """Seconds as an exact number of whole microseconds (the Redis clock's resolution)."""
    return Fraction(round(seconds * MICROS))


@dataclass(frozen=True, slots=True)
class GcraOutcome:
    allowed: bool
    tat: Fraction  # the new theoretical arrival time in µs (unchanged when refused)
    retry_after: float  # seconds until this cost would pass (0 when allowed)
    remaining: int  # whole units left after this decision
    reset: float  # seconds until the bucket is full again


def charged(cost: int, limit: int) -> int:
    """A cost above the capacity is charged as the whole capacity (it passes on a full bucket)."""
    return min(cost, limit)


def _state(tat: Fraction, now: Fraction, limit: int, window: Fraction) -> tuple[int, float]:
    """(whole units left, seconds until full) for a bucket at ``tat``."""
    debt = max(tat - now, Fraction(0))
    remaining = limit - math.ceil(debt * limit / window)
    return max(0, min(limit, remaining)), float(debt) / MICROS


def check(tat: Fraction, now: Fraction, limit: int, window: Fraction, cost: int) -> GcraOutcome:
    """Would ``cost`` units pass at ``now`` (µs)? Pure: the caller stores ``outcome.tat`` if it admits."""
    new_tat = max(tat, now) + Fraction(charged(cost, limit)) * window / limit
    allow_at = new_tat - window
    if allow_at > now:
        remaining, reset = _state(tat, now, limit, window)
        return GcraOutcome(False, tat, float(allow_at - now) / MICROS, remaining, reset)
    remaining, reset = _state(new_tat, now, limit, window)
    return GcraOutcome(True, new_tat, 0.0, remaining, reset)


def adjust(tat: Fraction, now: Fraction, limit: int, window: Fraction, delta: int) -> Fraction:
    """Charge ``delta`` more units (negative: refund), without an admission check."""
    moved = max(tat, now) + Fraction(delta) * window / limit
    return max(moved, now)
