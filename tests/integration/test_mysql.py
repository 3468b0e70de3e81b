"""MySQL clients through the proxy's MySQL listener, against a real MariaDB/MySQL.

PyMySQL and the `mariadb` command-line client work unchanged: queries,
transactions, multi-statements, NULLs, unicode, binary columns, a million-row
result; the server's own authentication errors come through; a policy's deny
is an ERR 1142 naming the rule; bad packets and a dead upstream get an ERR
and close only that client.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pymysql.cursors
import pytest

from sqlx.bench.mariadb import throwaway
from sqlx.proxy.embedded import free_port
from tests.fixtures.fix_mysql import MySqlServer
from tests.fixtures.fix_pg import PgServer, make_cert
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

Listener = tuple[ProxyProcess, int]  # the proxy, and its MySQL port
PACK = """
policy:
  fail_closed: false
  rules:
    - {name: no-secrets, when: {tables: [secrets]}, action: deny}
    - {name: root-denied, when: {users: [root]}, action: deny}
"""


def _mysql_config(server: MySqlServer, port: int) -> dict:
    return {"mysql": {"listen": f"127.0.0.1:{port}",
                      "upstream_dsn": f"mysql://root@{server.host}:{server.port}"}}  # fmt: skip


@pytest.fixture(scope="module")
def my_proxy(pg: PgServer, mysql_server: MySqlServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("mysql-proxy")
    pack = tmp / "pack.yaml"
    pack.write_text(PACK)
    port = free_port()
    config = {
        **_mysql_config(mysql_server, port),
        "policy": {"packs": [str(pack)]},
        "telemetry": {"sampling_ratio": 1.0},
    }
    proxy = start_proxy(tmp, pg, config)
    yield proxy, port
    proxy.stop()


def _connect(server: MySqlServer, port: int, **kw: object) -> pymysql.Connection:
    args: dict[str, object] = {"host": "127.0.0.1", "port": port, "user": server.user,
                               "password": server.password, "database": server.database,
                               "autocommit": True, "charset": "utf8mb4"}  # fmt: skip
    args.update(kw)
    return pymysql.connect(**args)  # type: ignore[arg-type]


def test_pymysql_queries_nulls_unicode_and_blobs(my_proxy: Listener,
                                                 mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    with _connect(mysql_server, port) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), data BLOB)")
        blob = bytes(range(256)) * 40
        cur.execute("INSERT INTO items VALUES (%s, %s, %s), (%s, %s, %s)",
                    (1, "žluťoučký 🐎", blob, 2, None, None))  # fmt: skip
        cur.execute("SELECT id, name, data FROM items ORDER BY id")
        assert cur.fetchall() == ((1, "žluťoučký 🐎", blob), (2, None, None))
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("SELECT nosuch FROM items")
        assert err.value.args[0] == 1054  # the server's own error, unchanged


def test_transactions_commit_and_roll_back(my_proxy: Listener,
                                           mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    with _connect(mysql_server, port, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS ledger (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute("INSERT INTO ledger VALUES (1)")
        conn.rollback()
        cur.execute("INSERT INTO ledger VALUES (2)")
        conn.commit()
    assert mysql_server.execute(f"SELECT id FROM {mysql_server.database}.ledger") == [(2,)]


def test_a_client_that_vanishes_mid_transaction_loses_its_transaction(
        my_proxy: Listener, mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    mysql_server.execute(f"CREATE TABLE IF NOT EXISTS {mysql_server.database}.half (id INT) "
                         "ENGINE=InnoDB")  # fmt: skip
    conn = _connect(mysql_server, port, autocommit=False)
    conn.cursor().execute("INSERT INTO half VALUES (1)")
    conn._sock.close()  # vanish without COM_QUIT, the transaction open  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        locks = mysql_server.execute("SELECT count(*) FROM information_schema.innodb_trx")
        if locks == [(0,)]:
            break
        time.sleep(0.1)
    assert mysql_server.execute(f"SELECT count(*) FROM {mysql_server.database}.half") == [(0,)]


def test_multi_statements_and_their_result_sets(my_proxy: Listener,
                                                mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with _connect(mysql_server, port, client_flag=flags) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 'two', 2; DO 0")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == (("two", 2),)


def test_a_million_rows_stream_through(my_proxy: Listener,
                                       mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    with _connect(mysql_server, port, cursorclass=pymysql.cursors.SSCursor) as conn:
        cur = conn.cursor()
        digits = " UNION ALL ".join(f"SELECT {d} AS i" for d in range(10))
        cur.execute(
            f"WITH d AS ({digits}) SELECT a.i + 10 * b.i + 100 * c.i + 1000 * e.i "
            "+ 10000 * f.i + 100000 * g.i + 1, 'row' FROM d a, d b, d c, d e, d f, d g"
        )
        count = total = 0
        for i, _text in cur:
            count += 1
            total += i
        assert count == 1_000_000 and total == 1_000_000 * 1_000_001 // 2


def test_the_servers_auth_error_comes_through(my_proxy: Listener,
                                               mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    with pytest.raises(pymysql.err.OperationalError) as err:
        _connect(mysql_server, port, password="wrong")
    assert err.value.args[0] == 1045


def test_the_command_line_client(my_proxy: Listener,
                                 mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    cli = shutil.which("mariadb") or shutil.which("mysql")
    assert cli, "the mariadb/mysql client is installed with the server"
    out = subprocess.run([cli, "-h", "127.0.0.1", "-P", str(port), "-u", mysql_server.user,
                          f"-p{mysql_server.password}", mysql_server.database, "--batch", "-e",
                          "SELECT 40 + 2 AS answer; SELECT DATABASE()"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["answer", "42", "DATABASE()", mysql_server.database]


def test_a_denied_statement_is_err_1142_and_never_reaches_the_server(
        my_proxy: Listener, mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    mysql_server.execute(f"CREATE TABLE IF NOT EXISTS {mysql_server.database}.secrets (v INT)")
    with _connect(mysql_server, port) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("DELETE FROM secrets")
        code, text = err.value.args
        assert code == 1142 and "no-secrets" in text and "ex_" in text
        cur.execute("SELECT 1")  # the session goes on
        assert cur.fetchall() == ((1,),)


def _greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    header = sock.recv(4, socket.MSG_WAITALL)
    length = int.from_bytes(header[:3], "little")
    sock.recv(length, socket.MSG_WAITALL)
    return sock


def _read_packet(sock: socket.socket) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    return sock.recv(int.from_bytes(header[:3], "little"), socket.MSG_WAITALL)


def test_bad_packets_close_only_that_client(my_proxy: Listener,
                                             mysql_server: MySqlServer) -> None:  # fmt: skip
    _, port = my_proxy
    with _connect(mysql_server, port) as bystander:
        sock = _greeted(port)
        sock.sendall(struct.pack("<I", 5)[:3] + b"\x07" + b"hello")  # sequence id 7, not 1
        err = _read_packet(sock)
        assert err[:1] == b"\xff" and struct.unpack_from("<H", err, 1)[0] == 1156
        assert sock.recv(1) == b""  # closed
        sock = _greeted(port)
        sock.sendall(b"\x10\x00")  # half a header, then gone
        sock.close()
        with bystander.cursor() as cur:
            cur.execute("SELECT 'still here'")
            assert cur.fetchall() == (("still here",),)


def test_a_dead_upstream_is_err_2003(pg: PgServer, tmp_path: Path) -> None:
    port = free_port()
    dead = MySqlServer("127.0.0.1", free_port(), "x", "x", "x")
    proxy = start_proxy(tmp_path, pg, _mysql_config(dead, port))
    try:
        with pytest.raises(pymysql.err.OperationalError) as err:
            pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=10)
        assert err.value.args[0] == 2003 and "Can't connect" in err.value.args[1]
    finally:
        proxy.stop()


def test_statements_are_traced_and_explained(my_proxy: Listener,
                                            mysql_server: MySqlServer) -> None:  # fmt: skip
    proxy, port = my_proxy
    with _connect(mysql_server, port) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'zz-secret-literal', 918273645 FROM DUAL WHERE 1 = %s", (1,))
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("SELECT * FROM secrets WHERE v = 736251948")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT nosuch_col FROM DUAL")
    var = proxy.logfile.parent / "var"
    deadline = time.monotonic() + 10
    spans: list[dict] = []
    text = ""
    while time.monotonic() < deadline and "nosuch_col" not in text:
        text = (var / "spans.jsonl").read_text() if (var / "spans.jsonl").exists() else ""
        spans = [json.loads(ln) for ln in text.splitlines() if '"mysql"' in ln]
        time.sleep(0.2)
    attrs = [s["attributes"] for s in spans]
    ok = next(a for a in attrs if "FROM DUAL WHERE" in a["db.query.text"])
    assert ok["db.system.name"] == "mysql" and ok["db.query.text"] == (
        "SELECT ?, ? FROM DUAL WHERE ? = ?"
    )
    assert ok["db.response.returned_rows"] == 1
    denied = next(a for a in attrs if a["sqlx.policy.verdict"] == "deny")
    assert denied["sqlx.policy.rule"] == "no-secrets"
    failed = next(
        a for a in attrs if a.get("db.response.status_code") and a["sqlx.policy.verdict"] == "allow"
    )
    assert failed["db.response.status_code"] == "42S22"
    # What a span says (ids and times aside: random hex may hold any digits).
    said = json.dumps([[s["name"], s["attributes"], s["events"]] for s in spans])
    for literal in ("zz-secret-literal", "918273645", "736251948"):
        assert literal not in said
    explained = (var / "explanations.jsonl").read_text()
    assert '"rule": "no-secrets"' in explained and "736251948" not in explained


def test_server_side_prepared_statements(my_proxy: Listener, mysql_server: MySqlServer) -> None:
    import mysql.connector

    _, port = my_proxy
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                   password=mysql_server.password,
                                   database=mysql_server.database)  # fmt: skip
    try:
        cur = conn.cursor(prepared=True)  # COM_STMT_PREPARE / EXECUTE, binary rows
        cur.execute("CREATE TABLE IF NOT EXISTS prep (id INT PRIMARY KEY, v VARCHAR(20), "
                    "f DOUBLE)")  # fmt: skip
        for i in range(3):
            cur.execute("REPLACE INTO prep VALUES (?, ?, ?)", (i, f"v{i} ✓", i / 2))
        cur.execute("SELECT id, v, f FROM prep WHERE id >= ? ORDER BY id", (1,))
        assert cur.fetchall() == [(1, "v1 ✓", 0.5), (2, "v2 ✓", 1.0)]
        with pytest.raises(mysql.connector.Error) as err:
            cur.execute("SELECT v FROM secrets WHERE v = ?", (1,))
        assert err.value.errno == 1142 and "no-secrets" in err.value.msg
        for _ in range(3):
            cur.execute("SELECT COUNT(*) FROM prep WHERE f > ?", (0.0,))
            assert cur.fetchall() == [(2,)]
    finally:
        conn.close()
    # Each execution is a statement of its own in telemetry, under the prepared text.
    spans = my_proxy[0].logfile.parent / "var" / "spans.jsonl"
    deadline = time.monotonic() + 10
    while True:
        said = [json.loads(line)["attributes"] for line in spans.read_text().splitlines()
                if "prep WHERE f > ?" in line]  # fmt: skip
        if len(said) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(said) == 3 and all(a["db.response.returned_rows"] == 1 for a in said), said


async def test_an_asyncio_driver(my_proxy: Listener, mysql_server: MySqlServer) -> None:
    import aiomysql

    _, port = my_proxy
    conn = await aiomysql.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                  password=mysql_server.password, db=mysql_server.database,
                                  autocommit=False)  # fmt: skip
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE IF NOT EXISTS amy (id INT PRIMARY KEY) ENGINE=InnoDB")
            await cur.execute("INSERT INTO amy VALUES (1), (2)")
            await conn.rollback()
            await cur.execute("INSERT INTO amy VALUES (3)")
            await conn.commit()
            await cur.execute("SELECT id FROM amy")
            assert await cur.fetchall() == ((3,),)
    finally:
        conn.close()


def test_tls_from_the_client_to_the_proxy(pg: PgServer, mysql_server: MySqlServer,
                                          tmp_path: Path) -> None:  # fmt: skip
    cert, key = make_cert(tmp_path)
    port = free_port()
    config = {**_mysql_config(mysql_server, port),
              "proxy": {"tls": {"cert_file": str(cert), "key_file": str(key)}}}  # fmt: skip
    proxy = start_proxy(tmp_path / "p", pg, config)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with _connect(mysql_server, port, ssl=context) as conn, conn.cursor() as cur:
            assert isinstance(conn._sock, ssl.SSLSocket)  # type: ignore[attr-defined]
            cur.execute("SELECT CONCAT('tls', ' ', 'ok')")
            assert cur.fetchall() == (("tls ok",),)
        with pytest.raises(pymysql.err.OperationalError) as err:
            _connect(mysql_server, port, ssl=context, password="wrong")
        assert err.value.args[0] == 1045  # the server's own answer, through TLS
        with _connect(mysql_server, port) as plain, plain.cursor() as cur:  # TLS stays optional
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
        # A client that sends its ClientHello in the same segment as the SSLRequest (as
        # any may, under load) is answered: before, both sides waited for each other.
        assert _hasty_tls_login(port, context, b"")[:1] == b"\x00"  # root, no password
        err = _hasty_tls_login(port, context, b"\x01" * 20)
        assert err[:1] == b"\xff" and struct.unpack_from("<H", err, 1)[0] == 1045
    finally:
        proxy.stop()


def _hasty_tls_login(port: int, context: ssl.SSLContext, auth: bytes) -> bytes:
    """Log in as root over TLS with the SSLRequest and the ClientHello in one send;
    the server's answer to the handshake response."""
    sock = _greeted(port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)

    def pump() -> None:  # what TLS has to say goes out; one read of the answer comes in
        sock.sendall(outgoing.read())
        data = sock.recv(65536)
        assert data, "the proxy closed the connection"
        incoming.write(data)

    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    caps = 0x0200 | 0x0800 | 0x8000 | 0x80000  # PROTOCOL_41, SSL, SECURE_CONNECTION, PLUGIN_AUTH
    head = struct.pack("<IIB23x", caps, 1 << 24, 45)
    sock.sendall(_packet(1, head) + outgoing.read())
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    tls.write(_packet(2, head + b"root\0" + bytes((len(auth),)) + auth
                      + b"mysql_native_password\0"))  # fmt: skip
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:3], "little"):
        try:
            data += tls.read(65536)
        except ssl.SSLWantReadError:
            pump()
    sock.close()
    return data[4:]


def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload


def test_kill_query_from_a_second_connection(my_proxy: Listener,
                                             mysql_server: MySqlServer) -> None:  # fmt: skip
    import threading

    _, port = my_proxy
    victim = _connect(mysql_server, port)
    outcome: list[object] = []

    def sleep() -> None:
        try:
            with victim.cursor() as cur:
                cur.execute("SELECT SLEEP(20)")
                outcome.append(cur.fetchall())
        except pymysql.err.MySQLError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=sleep)
    started = time.monotonic()
    worker.start()
    time.sleep(0.5)
    with _connect(mysql_server, port) as killer, killer.cursor() as cur:
        cur.execute(f"KILL QUERY {victim.thread_id()}")  # the server's id, as the greeting said
    worker.join(15)
    assert time.monotonic() - started < 10
    # MariaDB ends a killed SLEEP() with its result 1; MySQL with error 1317.
    assert outcome and (outcome[0] == ((1,),) or getattr(outcome[0], "args", (0,))[0] == 1317)
    with victim.cursor() as cur:  # the session goes on
        cur.execute("SELECT 2")
        assert cur.fetchall() == ((2,),)
    victim.close()


def test_change_user_changes_whom_policies_see(my_proxy: Listener,
                                              mysql_server: MySqlServer) -> None:  # fmt: skip
    import mysql.connector

    _, port = my_proxy
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                   password=mysql_server.password,
                                   database=mysql_server.database)  # fmt: skip
    try:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchall()[0][0].startswith(mysql_server.user)
        with pytest.raises(mysql.connector.Error) as err:
            # The driver's own statements after the change already run as root.
            conn.cmd_change_user(username="root", password="", database=mysql_server.database)
            conn.cursor().execute("SELECT CURRENT_USER()")
        assert err.value.errno == 1142 and "root-denied" in err.value.msg
    finally:
        conn.close()


def test_local_infile_is_refused_with_a_clear_error(my_proxy: Listener,
                                                    mysql_server: MySqlServer,
                                                    tmp_path: Path) -> None:  # fmt: skip
    _, port = my_proxy
    data = tmp_path / "rows.csv"
    data.write_text("1\n2\n")
    with _connect(mysql_server, port, local_infile=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS loaded (id INT)")
        with pytest.raises(pymysql.err.MySQLError) as err:
            cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE loaded")
        assert "local infile" in str(err.value).lower() or err.value.args[0] in (1148, 4166)
        cur.execute("SELECT COUNT(*) FROM loaded")
        assert cur.fetchall() == ((0,),)


def test_upstream_tls_per_the_dsn(pg: PgServer, tmp_path: Path) -> None:
    """A server that takes TLS connections only: the proxy speaks TLS to it as the DSN's
    ssl-mode says, whatever the client speaks to the proxy."""
    if not shutil.which("mariadbd"):
        pytest.skip("no mariadbd to start a TLS-only server with")
    cert, key = make_cert(tmp_path)
    proc, server_port = throwaway(tmp_path / "tls-db", (
        f"--ssl-cert={cert}", f"--ssl-key={key}", "--require-secure-transport=ON"))  # fmt: skip
    try:
        for mode, works in (("REQUIRED", True), (f"VERIFY_IDENTITY&ssl-ca={cert}", True),
                            ("DISABLED", False)):  # fmt: skip
            port = free_port()
            dsn = f"mysql://root@127.0.0.1:{server_port}?ssl-mode={mode}"
            proxy = start_proxy(tmp_path / mode[:8], pg, {
                "mysql": {"listen": f"127.0.0.1:{port}", "upstream_dsn": dsn},
                "proxy": {"tls": {"cert_file": str(cert), "key_file": str(key)}}})  # fmt: skip
            try:
                if not works:
                    with pytest.raises(pymysql.err.OperationalError):
                        pymysql.connect(host="127.0.0.1", port=port, user="root")
                    continue
                # TLS to the server, with the client plain and with the client on TLS too.
                for client_tls in (None, ssl.create_default_context(cafile=str(cert))):
                    conn = pymysql.connect(host="127.0.0.1", port=port, user="root",
                                           ssl=client_tls)  # fmt: skip
                    with conn, conn.cursor() as cur:
                        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                        assert cur.fetchall()[0][1], "the server saw no TLS"
                        conn.select_db("mysql")  # COM_INIT_DB after the handshake
                        cur.execute("SELECT DATABASE()")
                        assert cur.fetchall() == (("mysql",),)
                # The proxy's own catalog connection took TLS too.
                assert "catalog read" in proxy.log() and "cannot read" not in proxy.log()
            finally:
                proxy.stop()
    finally:
        proc.terminate()
        proc.wait(30)


def test_an_auth_switch_to_another_plugin(pg: PgServer, tmp_path: Path) -> None:
    """A user of MariaDB's ed25519 plugin: the greeting offers mysql_native_password, so
    the server asks the client to switch plugins, and the exchange is relayed as it comes
    (as caching_sha2_password's is on MySQL 8, which MariaDB does not have here)."""
    if not shutil.which("mariadbd"):
        pytest.skip("no mariadbd to start a server with the ed25519 plugin")
    proc, server_port = throwaway(tmp_path / "ed-db", ("--plugin-load-add=auth_ed25519",))
    try:
        admin = MySqlServer("127.0.0.1", server_port, "mysql", "root", "")
        admin.execute("CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')")
        assert admin.execute("SELECT plugin FROM mysql.user WHERE user = 'ed'") == [("ed25519",)]
        port = free_port()
        proxy = start_proxy(tmp_path / "p", pg, _mysql_config(admin, port))
        try:
            conn = _connect(admin, port, user="ed", password="ed-pw", database=None)
            with conn, conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER()")
                assert cur.fetchall() == (("ed@%",),)
            with pytest.raises(pymysql.err.OperationalError) as err:
                _connect(admin, port, user="ed", password="wrong", database=None)
            assert err.value.args[0] == 1045
        finally:
            proxy.stop()
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_lesser_commands_are_relayed_and_their_responses_followed(
    my_proxy: Listener, mysql_server: MySqlServer
) -> None:
    """COM_FIELD_LIST, COM_PING, COM_STATISTICS, COM_SET_OPTION and COM_RESET_CONNECTION: each
    gets the server's answer, and the proxy finds its end (the next query works)."""
    _, port = my_proxy
    conn = _connect(mysql_server, port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE fl (id INT, label VARCHAR(10))")
        conn._execute_command(0x04, b"fl\0")  # COM_FIELD_LIST: a definition per column, EOF
        names = []
        while not (packet := conn._read_packet()).is_eof_packet():
            names.append(packet.get_all_data().split(b"fl", 2)[-1])
        assert len(names) == 2
        conn.ping(reconnect=False)  # COM_PING: an OK
        conn._execute_command(0x09, b"")  # COM_STATISTICS: one packet of text
        assert b"Uptime:" in conn._read_packet().get_all_data()
        conn._execute_command(0x1B, b"\x01\x00")  # COM_SET_OPTION: multi-statements off
        conn._read_packet()
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT 1; SELECT 2")
        conn._execute_command(0x1B, b"\x00\x00")  # and on again
        conn._read_packet()
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == ((1,),) and cur.nextset() and cur.fetchall() == ((2,),)
        cur.execute("SET @kept = 'before'")
        conn._execute_command(0x1F, b"")  # COM_RESET_CONNECTION: session state is dropped
        assert conn._read_packet().is_ok_packet()
        cur.execute("SELECT @kept, 'after'")
        assert cur.fetchall() == ((None, "after"),)


def test_long_data_and_a_cursor_fetched_in_parts(my_proxy: Listener,
                                                 mysql_server: MySqlServer) -> None:  # fmt: skip
    """COM_STMT_SEND_LONG_DATA (no response), an execution that opens a read-only cursor
    (COM_STMT_FETCH in parts), COM_STMT_RESET and COM_STMT_CLOSE, then a plain query."""
    import io

    import mysql.connector

    _, port = my_proxy
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                   password=mysql_server.password,
                                   database=mysql_server.database, autocommit=True)  # fmt: skip
    try:
        conn.cmd_query("CREATE TABLE IF NOT EXISTS longs (id INT, b MEDIUMBLOB)")
        insert = conn.cmd_stmt_prepare(b"INSERT INTO longs VALUES (?, ?)")
        sid = insert["statement_id"]
        conn.cmd_stmt_send_long_data(sid, 1, io.BytesIO(b"x" * 100_000))
        conn.cmd_stmt_execute(sid, (1, b""), insert["parameters"], 0)
        for i in range(2, 6):
            conn.cmd_stmt_execute(sid, (i, b"y"), insert["parameters"], 0)
        select = conn.cmd_stmt_prepare(b"SELECT id, LENGTH(b) FROM longs ORDER BY id")
        sid = select["statement_id"]
        conn.cmd_stmt_execute(sid, (), (), 1)  # CURSOR_TYPE_READ_ONLY: rows on fetch
        conn.cmd_stmt_fetch(sid, 2)
        first, _ = conn.get_rows(binary=True, columns=select["columns"])
        conn.cmd_stmt_fetch(sid, 10)
        rest, _ = conn.get_rows(binary=True, columns=select["columns"])
        assert first == [(1, 100_000), (2, 1)] and rest == [(3, 1), (4, 1), (5, 1)]
        conn.cmd_stmt_reset(sid)
        conn.cmd_stmt_close(sid)
        conn.cmd_query("SELECT COUNT(*) FROM longs")
        assert conn.get_rows()[0] == [(5,)]
    finally:
        conn.close()
