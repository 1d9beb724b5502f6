"""When to try Redis again after it failed: exponential backoff with an injected clock."""

from __future__ import annotations


class Backoff:
    """Gate for calls to a dependency that may be down.

    ``ready(now_ms)`` says whether a call may be made; after a failure the gate stays shut for
    ``initial_ms``, doubling per consecutive failure up to ``max_ms``; one success resets it.
    """

    def __init__(self, initial_ms: int, max_ms: int) -> None:
        self._initial_ms = initial_ms
        self._max_ms = max_ms
        self._delay_ms = 0
        self._retry_at_ms = 0
        self.failures = 0
        """Consecutive failures so far; 0 while the dependency answers."""

    def ready(self, now_ms: int) -> bool:
        return now_ms >= self._retry_at_ms

    def failed(self, now_ms: int) -> None:
        self.failures += 1
        self._delay_ms = min(max(self._delay_ms * 2, self._initial_ms), self._max_ms)
        self._retry_at_ms = now_ms + self._delay_ms

    def succeeded(self) -> None:
        self.failures = 0
        self._delay_ms = 0
        self._retry_at_ms = 0
