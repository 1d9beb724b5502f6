"""``up``'s stop signals: one interrupts, the ones after it cannot."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from counterpoise.cli.shutdown import STOP_SIGNALS, Shutdown


@pytest.fixture
def shutdown() -> Iterator[Shutdown]:
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield Shutdown()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_the_first_stop_signal_interrupts_and_the_next_ones_are_reported(
    shutdown: Shutdown, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    assert capfd.readouterr().err.splitlines() == [
        "counterpoise: SIGTERM ignored, already stopping",
        "counterpoise: SIGINT ignored, already stopping",
    ]


def test_no_signal_interrupts_once_stopping_has_begun(shutdown: Shutdown) -> None:
    shutdown.begin()  # Kamailio exited: the cleanup runs without a signal
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGTERM)
