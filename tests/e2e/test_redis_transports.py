"""A balancer on ``rediss://`` (a CA made by the test) and on ``unix://``, with a password:
calls go through, and neither ``ps`` nor the balancer's log shows the password (issue 11)."""

from __future__ import annotations

import subprocess

import pytest

from ..redis_servers import PASSWORD, Servers
from .conftest import Bed

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("which", ["tls_url", "unix_url"])
def test_balancer_routes_over_tls_and_unix_and_hides_the_password(
    bed: Bed, servers: Servers, which: str
) -> None:
    bed.use_redis(getattr(servers, which))
    bed.store.client.flushdb()
    a = bed.start_downstream("a")
    bed.start_balancer()
    bed.add_pool((a, 1))
    result = bed.caller(calls=20, rate=20, hold_ms=100).wait(60)
    assert result.failed == 0 and result.successful == 20, result.output[-2000:]
    listed = bed.cli("proxy", "list")
    assert listed.returncode == 0 and a.uri in listed.stdout, listed.stderr
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert PASSWORD not in ps.stdout
    assert PASSWORD not in (bed.run_dir / "balancer.log").read_text(errors="replace")
