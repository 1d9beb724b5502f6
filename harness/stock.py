"""Kamailio's own example configs, as Debian ships them, run on a free loopback port.

Each is copied unchanged into a folder of its own; what an operator sets to point it at their
database and address is given on Kamailio's command line (``-A`` defines, ``-l``), never by
editing the copy. Lines an operator adds are applied as a unified diff by ``apply_patch``,
which fails loudly when Debian's file no longer matches the diff's context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from counterpoise import interpreter, processes
from harness import mariadb, testbed

KEMI_EXAMPLES = Path("/usr/share/doc/kamailio/examples/kemi")
KEMI_SCRIPT = "kamailio-basic-kemi-python.py"
SHIPPED_SCRIPT_FOLDER = "/usr/local/etc/kamailio/"
"""Where kamailio-basic-kemi.cfg loads its Python script from (hard-coded in the file)."""

LOCAL_CFG = "kamailio-local.cfg"
"""The file both stock configs ``import_file`` first, if it exists: the operator's own
settings beside the shipped file."""

ACCDB_COMMENT = re.compile(r"^#!ifdef ACCDB_COMMENT\n(.*?)^#!endif", re.MULTILINE | re.DOTALL)
"""The SQL a stock config asks the operator to run for WITH_ACCDB (the columns its
``acc`` ``db_extra`` writes), kept inside a block the preprocessor skips."""

WORKERS = 2
"""``-n``: SIP workers per socket (the native config ships 8; two cores are shared here)."""

START_TIMEOUT_S = 30.0
SIPP_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class StockConfig:
    """One shipped config and what runs it: ``features`` are ``-A`` defines it does not set
    itself, ``script`` a KEMI script shipped beside it."""

    name: str
    cfg: Path
    features: tuple[str, ...] = ()
    script: Path | None = None

    def defines(self) -> set[str]:
        """Every WITH_* feature on: the file's own ``#!define``s and ours."""
        own = re.findall(r"^#!define (WITH_\w+)\s*$", self.cfg.read_text(), re.MULTILINE)
        return {*own, *self.features}

    def uses_database(self) -> bool:
        return "WITH_MYSQL" in self.defines()

    def authenticates(self) -> bool:
        """Whether it challenges its subscribers (auth_db on the subscriber table)."""
        return "WITH_AUTH" in self.defines()

    def accdb_sql(self) -> str:
        """The ALTER TABLE statements its comments ask for when WITH_ACCDB is on, else ""."""
        if "WITH_ACCDB" not in self.defines():
            return ""
        match = ACCDB_COMMENT.search(self.cfg.read_text())
        if match is None:
            raise ValueError(f"{self.cfg} defines WITH_ACCDB but holds no ACCDB_COMMENT block")
        return match.group(1)


DB_FEATURES = (
    "WITH_MYSQL", "WITH_AUTH", "WITH_IPAUTH", "WITH_USRLOCDB",
    "WITH_ACCDB", "WITH_NAT", "WITH_ANTIFLOOD",
)  # fmt: skip
"""The MySQL-backed features kamailio-basic-kemi.cfg ships on, for the native config too."""

KEMI_PYTHON = StockConfig(
    "kemi-python",
    KEMI_EXAMPLES / "kamailio-basic-kemi.cfg",
    features=("WITH_CFGPYTHON3",),  # its DB_FEATURES are #!define'd in the file as shipped
    script=KEMI_EXAMPLES / KEMI_SCRIPT,
)
NATIVE = StockConfig("native", Path("/etc/kamailio/kamailio.cfg"))
NATIVE_DB = StockConfig("native-db", NATIVE.cfg, features=DB_FEATURES)


def kemi_local_cfg(run_dir: Path) -> str:
    """The operator's kamailio-local.cfg beside the KEMI example (which imports it first):

    - the script's load path is a string in the file: a substitution points it at the copy;
    - Kamailio calls the script's ``ksr_onsend_route`` for each request it forwards, by
      default, and the shipped script has none: app_python3 leaves the AttributeError set,
      and the next KSR call in that process fails (SystemError), aborting a later request
      unanswered. The maintainers' answer (kamailio/kamailio#2671) is to define it or to
      name no callback.
    """
    folder = f"{run_dir.resolve()}/"
    return f'#!subst "!{SHIPPED_SCRIPT_FOLDER}!{folder}!"\nkemi.onsend_route_callback=""\n'


class PatchError(RuntimeError):
    """An operator's patch did not apply to the stock file exactly (context or lines moved)."""


def apply_patch(folder: Path, diff: str) -> None:
    """Apply the unified ``diff`` (paths relative to ``folder``, ``a/``/``b/`` prefixes) with
    no fuzz; PatchError with patch's report if any hunk does not apply, the files untouched
    (a dry run goes first)."""
    for dry_run in (True, False):
        argv = ["patch", "--batch", "--forward", "--fuzz=0", "-p1", "-d", str(folder)]
        argv += ["--no-backup-if-mismatch", "--reject-file=-"]
        result = subprocess.run(
            [*argv, *(["--dry-run"] if dry_run else [])],
            input=diff,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise PatchError(
                f"the patch does not apply to the stock files in {folder}:\n"
                f"{(result.stdout + result.stderr).strip()}"
            )


@dataclasses.dataclass(frozen=True)
class Operator:
    """What an operator gives the copy besides patches: ``files`` copied beside it (an
    include it imports), ``defines`` on Kamailio's command line (``-A``), ``env`` in
    Kamailio's environment."""

    files: tuple[Path, ...] = ()
    defines: dict[str, str | int] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)


class StockKamailio:
    """A copy of one stock config in ``run_dir``, run by Kamailio on a free UDP port of
    127.0.0.1, pointed at ``db`` (``-A DBURL``) when it uses a database."""

    def __init__(
        self,
        config: StockConfig,
        run_dir: Path,
        db: mariadb.MariaDB | None = None,
        operator: Operator | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.db = db
        self.operator = operator or Operator()
        self.port = processes.free_port()
        self.cfg = run_dir / config.cfg.name
        self.proc: processes.Process | None = None
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.cfg, self.cfg)
        if config.script is not None:
            shutil.copyfile(config.script, run_dir / config.script.name)
            (run_dir / LOCAL_CFG).write_text(kemi_local_cfg(run_dir))
        for file in self.operator.files:
            shutil.copyfile(file, run_dir / file.name)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def target(self) -> str:
        """Where SIPp sends (``host:port``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "kamailio.log"

    def argv(self) -> list[str]:
        defines: dict[str, str | int] = {"DBURL": self.db.url} if self.db else {}
        defines.update(self.operator.defines)
        listen = [f"udp:127.0.0.1:{self.port}"]
        argv = processes.kamailio_argv(self.cfg, listen, WORKERS, self.run_dir, defines)
        for feature in self.config.features:
            argv += ["-A", feature]
        return argv

    def start(self) -> StockKamailio:
        """Start it and wait until it answers OPTIONS (its keepalive reply); StartError with
        the end of its log if it does not."""
        self.proc = processes.Process(
            f"kamailio {self.config.name}",
            self.argv(),
            self.log_path,
            env={**interpreter.environ(), **self.operator.env},
        )
        self.proc.ensure_started(
            lambda: processes.sip_options(*self.address, 0.3) == 200,
            START_TIMEOUT_S,
            f"{self.config.name} to answer OPTIONS on {self.target}",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running(
    config: StockConfig,
    folder: Path,
    subscribers: Sequence[tuple[str, str]] = (),
    patches: Sequence[str] = (),
    operator: Operator | None = None,
) -> Iterator[StockKamailio]:
    """``config`` running in ``folder``: when it uses a database, on a MariaDB of its own
    with Kamailio's schema, the ACCDB columns its comments ask for and ``subscribers`` (user,
    password); its copy changed by ``patches`` (unified diffs) first, given what
    ``operator`` adds. Everything started is
    stopped on leaving, and on any failure (a patch that does not apply included)."""
    with contextlib.ExitStack() as stops:
        db = None
        if config.uses_database():
            db = stops.enter_context(mariadb.running(folder / "mariadb", subscribers))
            if accdb_sql := config.accdb_sql():
                db.sql(accdb_sql)
        kamailio = StockKamailio(config, folder / config.name, db, operator)
        for diff in patches:
            apply_patch(kamailio.run_dir, diff)
        stops.callback(kamailio.stop)
        yield kamailio.start()


def register(
    kamailio: StockKamailio,
    run_dir: Path,
    user: str,
    password: str,
    port: int,
    contact_ip: str = "",
) -> testbed.CallResult:
    """REGISTER ``user`` from SIPp on 127.0.0.1:``port`` (her Contact: start the UAS there
    afterwards to take her calls), answering the config's digest challenge with
    ``password`` (register-auth.xml), or unchallenged where it authenticates no one.
    ``contact_ip``: the address her Contact names instead (a private one: she is behind NAT,
    reachable only at the address her REGISTER came from)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    extra: tuple[str, ...]
    if kamailio.config.authenticates():
        scenario, extra = "register-auth.xml", ("-s", user, "-au", user, "-ap", password)
    else:
        users = testbed.users_csv(run_dir / f"register-{user}.csv", [user], 3600)
        scenario, extra = "register.xml", ("-inf", str(users))
    if contact_ip:
        contact = {"@[local_ip]:[local_port]>": f"@{contact_ip}:[local_port]>"}
        scenario = str(testbed.derived_scenario(run_dir, scenario, contact))
    caller = testbed.Caller(
        kamailio.target, run_dir, 1, 1, scenario=scenario, port=port, extra=extra
    )
    return caller.wait(SIPP_TIMEOUT_S)


def call(
    kamailio: StockKamailio, run_dir: Path, caller: str, password: str, callee: str, port: int
) -> testbed.CallResult:
    """One call from ``caller`` (SIPp on 127.0.0.1:``port``) to ``callee`` through the
    config, answering its proxy challenge with ``password`` (uac-auth.xml), or unchallenged
    where it authenticates no one (uac.xml)."""
    if kamailio.config.authenticates():
        scenario = "uac-auth.xml"
        extra: tuple[str, ...] = ("-key", "caller", caller, "-au", caller, "-ap", password)
    else:
        scenario, extra = "uac.xml", ()
    uac = testbed.Caller(
        kamailio.target, run_dir, 1, 1, scenario=scenario, port=port,
        extra=("-s", callee, *extra),
    )  # fmt: skip
    return uac.wait(SIPP_TIMEOUT_S)
