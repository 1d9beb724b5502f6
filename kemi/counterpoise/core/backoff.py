"""When to try Redis again after it failed: exponential backoff with an injected clock."""

from __future__ import annotations

from collections.abc import Callable

from counterpoise.core.settings import Settings


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

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        """The backoff ``settings.redis.redis_backoff_*`` describe."""
        return cls(settings.redis.redis_backoff_initial_ms, settings.redis.redis_backoff_max_ms)


class Guarded:
    """Calls to a dependency that may be down (Redis): skipped while ``backoff`` is shut,
    failures of the kinds in ``errors`` caught, and one log line when it goes away and one
    when it comes back, however many calls fail in between."""

    def __init__(
        self,
        backoff: Backoff,
        errors: tuple[type[BaseException], ...],
        log: Callable[[str], None],
        name: str,
        while_down: str,
    ) -> None:
        self.backoff = backoff
        self._errors = errors
        self._log = log
        self._name = name
        self._while_down = while_down
        self.errors = 0
        """Failed calls so far (the node's ``counterpoise_redis_errors_total``)."""

    @property
    def down(self) -> bool:
        return self.backoff.failures > 0

    def call(self, now_ms: int, action: Callable[[], object]) -> bool:
        """Run ``action`` unless backing off; True when it ran without failing."""
        if not self.backoff.ready(now_ms):
            return False
        try:
            action()
        except self._errors as error:
            self.errors += 1
            if not self.down:
                self._log(f"{self._name} unreachable, {self._while_down}: {error}")
            self.backoff.failed(now_ms)
            return False
        if self.down:
            self._log(f"{self._name} reachable again after {self.backoff.failures} failed attempts")
        self.backoff.succeeded()
        return True

    @classmethod
    def with_backoff_of(
        cls,
        settings: Settings,
        errors: tuple[type[BaseException], ...],
        log: Callable[[str], None],
        name: str,
        while_down: str,
    ) -> Guarded:
        """A guard backing off as ``settings.redis.redis_backoff_*`` say."""
        return cls(Backoff.from_settings(settings), errors, log, name, while_down)
