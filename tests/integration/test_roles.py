"""The roles of ``redis/users.acl`` on a real Redis (issue 11): each user can do its job and
nothing more; ``default`` is off."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from counterpoise import processes
from counterpoise.cli import embedded
from counterpoise.cli.main import main as cli_main
from counterpoise.core import reports
from counterpoise.core.location import PendingWrite, Record
from counterpoise.core.pool import Admin
from counterpoise.core.reports import LoadReport
from counterpoise.core.settings import Settings
from counterpoise.store.acl import add_agent_user
from counterpoise.store.client import connect
from counterpoise.store.dialog_keys import DialogKeyStore
from counterpoise.store.keys import AOR, DIALOG, PIN
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import PoolStore

from ..fakes.sync import Harness

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
PREFIX = "cp:"


class AclRedis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.acl = embedded.prepare(folder, PREFIX)
        self.port = processes.free_port(socket.SOCK_STREAM)
        self.proc = processes.start_redis(self.port, folder, aclfile=self.acl)

    def url(self, role: str) -> str:
        return f"redis://{role}@127.0.0.1:{self.port}/0"

    def client(self, role: str, decode: bool = True) -> redis.Redis:
        path = str(embedded.password_file(self.folder, role))
        return connect(self.url(role), 2000, decode=decode, password_file=path)

    @classmethod
    def serve(cls, folder: Path) -> Iterator[AclRedis]:
        """A fixture's life: started in ``folder``, stopped after."""
        server = cls(folder)
        yield server
        server.proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    yield from AclRedis.serve(tmp_path_factory.mktemp("acl"))


@pytest.fixture
def operator(server: AclRedis) -> PoolStore:
    store = PoolStore(server.client("default"), PREFIX)
    store.client.flushdb()
    return PoolStore(server.client("operator"), PREFIX)


def test_password_files_are_private_and_no_connection_without_one(server: AclRedis) -> None:
    for role in ("default", "balancer", "operator", "viewer"):
        assert embedded.password_file(server.folder, role).stat().st_mode & 0o777 == 0o600
    assert server.acl.stat().st_mode & 0o777 == 0o600
    with pytest.raises(redis.AuthenticationError):
        connect(f"redis://127.0.0.1:{server.port}/0", 2000).ping()


def test_balancer_runs_the_sync_loop_and_location_but_cannot_change_the_pool(
    server: AclRedis, operator: PoolStore
) -> None:
    operator.add(A)
    operator.add(B)
    harness = Harness(PoolStore(server.client("balancer"), PREFIX), Settings())
    for _ in range(10):
        harness.tick(200)
    assert harness.loop.redis_ok and set(harness.shared.table) == {A, B}
    assert harness.store.store.node_weights(harness.clock.wall_ms(), 10_000)["lb1"].keys() == {A, B}
    assert json.loads(server.client("balancer").get(f"{PREFIX}sends:lb1")).keys() == {A, B}
    locations = LocationStore(server.client("balancer"), PREFIX)
    locations.put(AOR, "u@h", Record(A, 1))
    dialog = Record(A, 1, 0, "f", "t", "198.51.100.7")
    locations.apply_dialogs([PendingWrite.setting("c@h", dialog, 60_000)], 1, 10)
    assert locations.get(DIALOG, "c@h") == dialog
    assert locations.lookup("u@h", "h")[1] == Record(A, 1)
    balancer = server.client("balancer")
    for write in (
        lambda: balancer.hset(f"{PREFIX}pool", A, '{"weight": 9}'),
        lambda: balancer.set(f"{PREFIX}pool:version", 5),
        lambda: balancer.set(f"{PREFIX}loc:pin:u@h", Record(B).to_json()),
        lambda: balancer.set(f"{PREFIX}report:{A}", b"x"),
        lambda: balancer.flushdb(),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()


def test_agent_writes_its_own_report_only(server: AclRedis, operator: PoolStore) -> None:
    admin = server.client("default")
    user = add_agent_user(admin, A, PREFIX, "agent-secret")
    agent = PoolStore(
        connect(f"redis://{user}:agent-secret@127.0.0.1:{server.port}/0", 2000), PREFIX
    )
    report = reports.encode(LoadReport(A, 1, 1, cpu_utilisation=0.5))
    agent.put_report(A, report, 3000)
    assert server.client("viewer", decode=False).get(f"{PREFIX}report:{A}") == report
    for write in (
        lambda: agent.put_report(B, report, 3000),  # another proxy's report
        lambda: agent.add(B),  # call interception
        lambda: agent.client.hset(f"{PREFIX}pool", B, '{"weight": 1}'),
        lambda: agent.client.get(f"{PREFIX}report:{A}"),  # not even a read
        lambda: agent.client.publish("elsewhere", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    assert f"user {user}" in server.acl.read_text()  # ACL SAVE: it survives a restart


def test_only_the_balancer_and_the_administrator_reach_the_dialog_keys(
    server: AclRedis, operator: PoolStore
) -> None:
    balancer = DialogKeyStore(server.client("balancer"), PREFIX)
    assert balancer.create_first(bytes(32)) and not balancer.create_first(bytes(range(32)))
    assert balancer.ring()[0]["1"].secret == bytes(32)
    admin = DialogKeyStore(server.client("default"), PREFIX)
    key, dropped = admin.rotate(bytes(range(32)), 1000)
    assert key.key_id == "2" and dropped == [] and set(balancer.ring()[0]) == {"1", "2"}
    agent_user = add_agent_user(server.client("default"), A, PREFIX, "agent-secret")
    agent = connect(f"redis://{agent_user}:agent-secret@127.0.0.1:{server.port}/0", 2000)
    name = balancer.keys.dialog_keys
    for role in (operator.client, server.client("viewer"), agent):
        with pytest.raises(redis.exceptions.NoPermissionError):
            role.hgetall(name)
        with pytest.raises(redis.exceptions.NoPermissionError):
            role.hset(name, "9", "0 " + "00" * 32)
        with pytest.raises(redis.exceptions.NoPermissionError):
            role.delete(name)


def test_viewer_reads_and_cannot_write_anything(server: AclRedis, operator: PoolStore) -> None:
    operator.add(A)
    operator.set_admin(A, Admin.DRAINED)
    LocationStore(server.client("operator"), PREFIX).put(PIN, "u@h", Record(A))
    viewer = PoolStore(server.client("viewer"), PREFIX)
    assert viewer.pool()[A].admin == Admin.DRAINED
    assert [e.name for e in LocationStore(viewer.client, PREFIX).scan()] == ["u@h"]
    for write in (
        lambda: viewer.add(B),
        lambda: viewer.set_admin(A, Admin.ACTIVE),
        lambda: viewer.client.delete(f"{PREFIX}pool"),
        lambda: viewer.client.set(f"{PREFIX}loc:pin:x@y", "{}"),
        lambda: viewer.client.publish(f"{PREFIX}reports", A),
        lambda: viewer.client.flushdb(),
        lambda: viewer.client.config_set("maxmemory", "1"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()


def test_prepare_keeps_passwords_and_agent_users_across_starts(tmp_path: Path) -> None:
    acl = embedded.prepare(tmp_path, PREFIX)
    first = embedded.password_file(tmp_path, "operator").read_text()
    acl.write_text(acl.read_text() + "user agent-sip-x on #00 ~cp:report:sip:x\n")
    embedded.prepare(tmp_path, PREFIX)
    assert embedded.password_file(tmp_path, "operator").read_text() == first
    assert "user agent-sip-x" in acl.read_text()


def _modes(folder: Path) -> dict[str, int]:
    """Mode bits of the folder and of everything in it, by path relative to the folder."""
    paths = [folder, *folder.rglob("*")]
    return {str(path.relative_to(folder)): path.stat().st_mode & 0o777 for path in paths}


def private(folder: Path) -> dict[str, int]:
    """What in ``folder`` is not private: folders other than 0700, files other than 0600."""
    return {
        name: mode
        for name, mode in _modes(folder).items()
        if mode != (0o700 if (folder / name).is_dir() else 0o600)
    }


def test_data_folder_stays_private_after_agent_user_rewrites_the_acl(
    server: AclRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``counterpoise agent-user`` makes Redis rewrite ``users.acl`` (ACL SAVE): the Redis
    process's umask keeps it, and every append-only file, readable by its owner only."""
    monkeypatch.setenv("COUNTERPOISE_REDIS_URL", f"redis://127.0.0.1:{server.port}/0")
    monkeypatch.setenv("COUNTERPOISE_REDIS_DATA_DIR", str(server.folder))
    before = server.acl.stat().st_ino
    assert cli_main(["agent-user", B, "--password-file", str(tmp_path / "agent.password")]) == 0
    assert server.acl.stat().st_ino != before  # rewritten by Redis, not by the test
    assert "user agent-sip-10.0.0.2-5060" in server.acl.read_text()
    assert (server.folder / "appendonlydir").is_dir()
    assert private(server.folder) == {}


def test_prepare_closes_a_folder_left_readable(tmp_path: Path) -> None:
    (tmp_path / "appendonlydir").mkdir(mode=0o755)
    (tmp_path / "appendonlydir" / "appendonly.aof.1.incr.aof").write_text("")
    (tmp_path / "appendonlydir" / "appendonly.aof.1.incr.aof").chmod(0o644)
    tmp_path.chmod(0o755)
    embedded.prepare(tmp_path, PREFIX)
    assert private(tmp_path) == {}
