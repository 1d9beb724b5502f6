"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from ..fakes.ksr import FakeKsr


@pytest.fixture
def ksr(monkeypatch: pytest.MonkeyPatch) -> FakeKsr:
    """A fresh fake ``KSR`` module, installed as ``sys.modules["KSR"]`` for this test: import
    the edge (``counterpoise.kamailio``) after requesting it."""
    fake = FakeKsr()
    fake.install(monkeypatch)
    return fake
