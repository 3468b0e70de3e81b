"""A local PostgreSQL cluster the proxy (or a test) starts and stops itself.

Used when no upstream is configured (`sqlxos proxy` then works out of the box)
and by the test harness for throwaway clusters. Server binaries come from
`$SQLX_PG_BIN`, the installed PostgreSQL (`pg_config`, Debian's
/usr/lib/postgresql/N/bin), or the `pgserver` wheel, in that order. The
server refuses to run as root, so as root the cluster belongs to the
`postgres` account (or a `sqlxos` system account created for it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("sqlx.embedded")


class ClusterError(Exception):
    pass


def find_pg_bin() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    if os.environ.get("SQLX_PG_BIN"):
        candidates.append(Path(os.environ["SQLX_PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    # The pgserver wheel ships a relocatable PostgreSQL; find it without importing
    # the package (its import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for path in candidates:
        if all((path / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return path
    raise ClusterError(
        "no PostgreSQL server binaries found: install PostgreSQL, `pip install pgserver`, "
        "or set SQLX_PG_BIN"
    )


def client_binary(name: str) -> str:
    """psql or pgbench: from PATH, else beside the server binaries."""
    return shutil.which(name) or str(find_pg_bin() / name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below Linux's ephemeral range (32768 up): a port the kernel hands
    out for outgoing connections could be taken by one before the caller binds it."""
    for port in random.sample(range(20000, 32768), 64):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _service_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "sqlxos"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "sqlxos"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("sqlxos")


@dataclass
class LocalCluster:
    """One PostgreSQL data directory, listening on 127.0.0.1 only."""

    datadir: Path
    port: int = 0
    superuser: str = "postgres"
    hba: list[str] = field(default_factory=list)  # extra pg_hba lines, before the trust ones
    settings: dict[str, str] = field(default_factory=dict)
    bindir: Path | None = None

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).absolute()
        self.bindir = self.bindir or find_pg_bin()
        self.account = _service_account()
        if not self.port:
            self.port = free_port()

    @property
    def logfile(self) -> Path:
        return self.datadir / "server.log"

    @property
    def socket_dir(self) -> Path:
        return self.datadir

    def dsn(self, user: str | None = None, database: str = "postgres") -> str:
        who = user or self.superuser
        return f"postgresql://{who}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=check,
            env=env,
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )

    def _own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _make_reachable(self) -> None:
        """Let the server account traverse (not list) the folders above its data dir."""
        if self.account is None:
            return
        for parent in self.datadir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def init(self) -> None:
        """initdb once; later calls reuse the existing cluster."""
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        self._make_reachable()
        self._own(self.datadir)
        try:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", self.superuser,
                "--auth=trust", "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"initdb failed: {exc.stderr.strip()}") from exc
        hba = self.datadir / "pg_hba.conf"
        lines = [*self.hba, "local all all trust", "host all all 127.0.0.1/32 trust"]
        hba.write_text("\n".join(lines) + "\n")
        self._own(hba)

    def add_file(self, name: str, content: bytes, mode: int = 0o600) -> Path:
        """Place a file (a TLS key, say) in the data dir, owned by the server account."""
        self.init()
        path = self.datadir / name
        path.write_bytes(content)
        path.chmod(mode)
        self._own(path)
        return path

    def start(self) -> None:
        self.init()
        options = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        try:
            self._run(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "60", "-o", opts, "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ClusterError(
                f"PostgreSQL did not start: {exc.stdout}{exc.stderr}\n{self.log_tail()}"
            ) from exc
        log.info("local PostgreSQL started", port=self.port, datadir=str(self.datadir))

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            done = self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "20",
                             "stop", check=False)  # fmt: skip
            if done.returncode != 0 and mode != "immediate":
                # A server busy with crash recovery can outlast a fast shutdown.
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop",
                          check=False)  # fmt: skip

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the local socket (set-up only)."""
        psql = client_binary("psql")
        out = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.superuser,
             "-d", database, "-c", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode:
            raise ClusterError(out.stderr.strip())
        return out.stdout

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
