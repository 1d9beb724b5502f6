"""The `counterpoise` command contract: what scripts and operators rely on."""

from __future__ import annotations

import json
import socket

import pytest

from counterpoise import processes
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e


def test_proxy_commands_round_trip_through_redis(bed: Bed) -> None:
    assert bed.cli("proxy", "add", "sip:127.0.0.1:5071", "--weight", "3").returncode == 0
    assert bed.cli("proxy", "add", "sip:127.0.0.1:5072").returncode == 0
    assert bed.cli("proxy", "drain", "sip:127.0.0.1:5072").returncode == 0

    listing = bed.cli("proxy", "list", "--json")

    assert listing.returncode == 0, listing.stderr
    rows = {row["uri"]: row for row in json.loads(listing.stdout)}
    assert set(rows) == {"sip:127.0.0.1:5071", "sip:127.0.0.1:5072"}
    for row in rows.values():
        assert {"uri", "state", "base_weight", "weight", "inflight"} <= set(row)
    assert rows["sip:127.0.0.1:5071"]["base_weight"] == 3
    assert rows["sip:127.0.0.1:5072"]["admin"] == "drained"
    assert bed.cli("proxy", "undrain", "sip:127.0.0.1:5072").returncode == 0
    assert bed.cli("proxy", "rm", "sip:127.0.0.1:5072").returncode == 0
    assert set(bed.store.pool()) == {"sip:127.0.0.1:5071"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("proxy", "add", "127.0.0.1:5060"), "is not a proxy SIP URI"),
        (("proxy", "add", "sip:127.0.0.1:5060", "--weight", "0"), "outside 0.001..1e+06"),
        (("proxy", "rm", "sip:127.0.0.1:5999"), "is not in the pool"),
        (("up", "--listen", "nonsense"), "expected [PROTO:]HOST:PORT"),
    ],
)
def test_errors_print_one_line_and_exit_non_zero(bed: Bed, args, message) -> None:
    result = bed.cli(*args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_unreachable_redis_is_one_clear_line(bed: Bed) -> None:
    bed.redis_url = f"redis://127.0.0.1:{processes.free_port(socket.SOCK_STREAM)}/0"
    result = bed.cli("proxy", "list")
    assert result.returncode == 1
    assert "is unreachable" in result.stderr and result.stderr.count("\n") == 1


def test_up_refuses_a_taken_port(bed: Bed) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = bed.cli("up", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "is not available" in result.stderr and result.stderr.count("\n") == 1
