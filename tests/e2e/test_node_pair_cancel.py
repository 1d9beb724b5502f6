"""Calls in set-up when the active node of a pair dies, cancelled by their callers: the
CANCEL reaches the survivor, which has no transaction for it, and still stops the callee's
ringing; the 487 reaches the caller and its ACK the proxy (``harness/cancel_failover.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import cancel_failover

pytestmark = pytest.mark.e2e


def test_a_call_ringing_through_a_dead_node_is_cancelled_through_the_survivor(
    tmp_path: Path,
) -> None:
    run = cancel_failover.run(tmp_path)
    calls = cancel_failover.CALLS
    # Each call reached a proxy once, through the node that died...
    assert run.invites_at_proxies == calls
    # ... and each caller had its CANCEL answered 200 and its INVITE 487, and ACKed it: the
    # proxy's tm sends 487 only for a transaction it cancelled (uas-ringing.xml answers the
    # CANCEL and leaves the INVITE to the proxy's timer), so the CANCEL reached the holder.
    assert (run.successful, run.failed) == (calls, 0), (
        run.error_codes,
        run.survivor_edge,
        run.sipp_tail,
    )
    # The survivor sent them on as orphans: each CANCEL and each ACK at least once.
    assert run.survivor_edge.get("orphan_forwarded", 0) >= 2 * calls, run.survivor_edge
