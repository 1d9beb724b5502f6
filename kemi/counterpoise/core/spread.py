"""Evenly spread uniforms: the first candidate of each weighted pick (``core.selection``).

Pure arithmetic: no clock, no Kamailio; the start is passed in.

Why not the random generator: n independent draws put ``n * p`` of them in an interval of
length ``p`` only up to a binomial error of ``sqrt(n * p * (1 - p))``, so a node's few hundred
calls split by the weights only within several points, and two nodes that route with the same
weights (a pair before and after a failover) split a few points apart by chance alone. An
additive recurrence ``u_k = frac(start + k * alpha)`` with ``alpha`` the golden ratio's
conjugate is a low-discrepancy sequence: every interval ``[a, b)`` holds ``n * (b - a)`` of its
first n points up to an error that grows only like ``log(n)``, whatever the start, the
interval or n. Picking by these values follows the weights as closely as a deterministic
weighted cycle does (dispatcher's), and it needs no state but one float per process.

The golden ratio is the irrational whose multiples mod 1 spread most evenly (its continued
fraction has only 1s, so no fraction approximates it well), which keeps that error smallest.
"""

from __future__ import annotations

import math

GOLDEN_STEP = (math.sqrt(5.0) - 1.0) / 2.0
"""The step of the recurrence: the golden ratio's conjugate, 0.618..."""


class GoldenSpread:
    """A callable like ``random.random``: each call returns the next ``frac(start + k * step)``.

    One per process, with its own start (``start`` in [0, 1), e.g. drawn from that process's
    random generator once): the workers of a node then start at different points of the
    sequence, and each one's picks still follow the weights closely."""

    def __init__(self, start: float) -> None:
        self._value = start % 1.0

    def __call__(self) -> float:
        self._value = (self._value + GOLDEN_STEP) % 1.0
        return self._value
