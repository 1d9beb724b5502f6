"""A private MariaDB holding a Kamailio database, made as an operator makes one.

Its own data folder, unix socket and TCP port on 127.0.0.1, so it never meets the system's
``mariadb`` service or another test's server. The schema is created by Kamailio's own
``kamdbctl create`` and subscribers are added by ``kamctl add``: both read ``~/.kamctlrc``
after ``/etc/kamailio/kamctlrc``, so they run with ``HOME`` set to a folder of this server
holding a ``.kamctlrc`` that answers every question ``kamdbctl`` would otherwise ask, and a
``.my.cnf`` naming this server's socket for the ``mysql`` client they call.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from counterpoise import processes

DATABASE = "kamailio"
RW_USER = "kamailio"
RW_PASSWORD = "kamailiorw"
"""kamdbctl's default database and read-write user: the ones the stock configs' DBURL names."""

START_TIMEOUT_S = 60.0
"""mariadbd creates its InnoDB files at first start; on a loaded machine that takes seconds."""

TOOL_TIMEOUT_S = 60.0

SERVER_PROGRAM = "mariadbd"


class MariaDB:
    """One mariadbd in ``folder``, stopped by ``stop()`` (or by leaving ``running()``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.datadir = folder / "data"
        self.socket_path = folder / "mysqld.sock"
        self.home = folder / "home"
        self.port = processes.free_port(socket.SOCK_STREAM)
        self.admin = getpass.getuser()
        """The database's superuser: the OS user running the tests, by unix-socket login."""
        self.proc: processes.Process | None = None

    @property
    def url(self) -> str:
        """The DBURL a Kamailio config takes (``-A DBURL=...``), over TCP to this server."""
        return f"mysql://{RW_USER}:{RW_PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        """Initialise the data folder and start the server; StartError (and nothing left
        running) if either fails."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_client_files()
        self._run(
            "mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
            f"--user={self.admin}", "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={self.admin}", "--skip-test-db",
        )  # fmt: skip
        argv = [
            SERVER_PROGRAM, "--no-defaults", f"--datadir={self.datadir}",
            f"--socket={self.socket_path}", f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--user={self.admin}", f"--pid-file={self.folder / 'mysqld.pid'}",
            "--skip-log-bin", "--innodb-buffer-pool-size=32M",
        ]  # fmt: skip
        self.proc = processes.Process("mariadbd", argv, self.folder / "mariadbd.log")
        self.proc.ensure_started(
            self._accepts, START_TIMEOUT_S, f"MariaDB to accept connections on {self.socket_path}"
        )

    def create_kamailio_schema(self) -> None:
        """``kamdbctl create``: the database, its users (read-write and read-only, from
        localhost and from 127.0.0.1) and the standard tables."""
        self._run("kamdbctl", "create")

    def add_subscriber(self, user: str, password: str, domain: str) -> None:
        """``kamctl add user@domain password``: the row auth_db checks digests against."""
        self._run("kamctl", "add", f"{user}@{domain}", password)

    def sql(self, statements: str) -> str:
        """Run SQL in the Kamailio database as the superuser; its tab-separated output."""
        return self._run("mariadb", "--batch", DATABASE, "-e", statements)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def _accepts(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket_path))
                return bool(probe.recv(1))  # the server's greeting
        except OSError:
            return False

    def _write_client_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".my.cnf").write_text(f"[client]\nsocket={self.socket_path}\n")
        settings = {
            "DBENGINE": "MYSQL",
            "DBHOST": "localhost",  # the unix socket of .my.cnf
            "DBNAME": DATABASE,
            "DBRWUSER": RW_USER,
            "DBRWPW": RW_PASSWORD,
            "DBACCESSHOST": "127.0.0.1",  # Kamailio connects over TCP
            "DBROOTUSER": self.admin,
            "DBROOTPWSKIP": "yes",  # unix-socket login: no password to prompt for
            "CHARSET": "latin1",  # else kamdbctl asks for one when the server's is utf8mb4
            "INSTALL_EXTRA_TABLES": "no",
            "INSTALL_PRESENCE_TABLES": "no",
            "INSTALL_DBUID_TABLES": "no",
        }
        text = "".join(f'{name}="{value}"\n' for name, value in settings.items())
        (self.home / ".kamctlrc").write_text(text)

    def _run(self, *argv: str) -> str:
        """Run a tool against this server with no terminal (a question fails, not hangs)."""
        env = {**os.environ, "HOME": str(self.home)}
        try:
            result = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError:
            raise processes.StartError(
                f"{argv[0]} is not installed (run `bash scripts/install.sh --dev`)"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise processes.StartError(f"{argv[0]}: {error}") from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise processes.StartError(f"{' '.join(argv)} failed ({result.returncode}):\n{output}")
        return result.stdout


@contextlib.contextmanager
def running(
    folder: Path, subscribers: Sequence[tuple[str, str]] = (), domain: str = "127.0.0.1"
) -> Iterator[MariaDB]:
    """A started MariaDB with the Kamailio schema and ``subscribers`` (user, password) in
    ``domain``; stopped on leaving, and on any failure while it is being made."""
    server = MariaDB(folder)
    with contextlib.ExitStack() as stops:
        stops.callback(server.stop)
        server.start()
        server.create_kamailio_schema()
        for user, password in subscribers:
            server.add_subscriber(user, password, domain)
        yield server
