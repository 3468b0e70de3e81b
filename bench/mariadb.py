"""A MariaDB/MySQL server for the benchmarks and the tests: the local one, or a throwaway.

`local_or_throwaway(root)` answers with the server at 127.0.0.1:3306 (root,
no password) when it answers, else starts MariaDB in `root` (`mariadb-install-db`
then `mariadbd` on a free 127.0.0.1 port, the machine's my.cnf ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pymysql

from sqlx.proxy.embedded import free_port

LOCAL_PORT = 3306


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
        pymysql.connect(host="127.0.0.1", port=port, user="root").close()
        return True
    except (OSError, pymysql.Error):
        return False


def throwaway(root: Path, options: Sequence[str] = ()) -> tuple[subprocess.Popen, int]:
    """Start a MariaDB of its own in `root`, with server `options`: (its process, its port)."""
    datadir, port = root / "data", free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    # --no-defaults: the machine's my.cnf (its user, log and socket) is not this server's.
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}",
                    "--skip-test-db", "--auth-root-authentication-method=normal", *user],
                   check=True, capture_output=True)  # fmt: skip
    proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--port={port}",
                             "--bind-address=127.0.0.1", f"--socket={root / 'sock'}",
                             f"--log-error={root / 'error.log'}", *user, *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while not reachable(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the throwaway MariaDB did not start (see {root / 'error.log'})")
        time.sleep(0.2)
    return proc, port


def local_or_throwaway(root: Path) -> tuple[subprocess.Popen | None, int]:
    if reachable(LOCAL_PORT):
        return None, LOCAL_PORT
    return throwaway(root)
