"""Large streams through the proxy with bounded memory, and flow control for slow clients."""

from __future__ import annotations

import threading
import time

import psycopg

from sqlx.proxy.pg import codec
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess
from tests.fixtures.raw import RawClient

MB = 1 << 20


class PeakRSS:
    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy, self.peak, self._stop = proxy, 0, threading.Event()
        self.base = proxy.rss_kb()
        self._t = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proxy.rss_kb())
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1024


def test_copy_150mb_in_and_out_without_buffering(proxy: ProxyProcess) -> None:
    block = b"".join(b"%d\t%s\n" % (i, b"y" * 1000) for i in range(1000))  # ~1 MB
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("create temp table t_big (id int, payload text)")
        with PeakRSS(proxy) as mem_in, conn.cursor().copy("copy t_big from stdin") as copy:
            for _ in range(150):
                copy.write(block)
        assert conn.execute("select count(*) from t_big").fetchone() == (150_000,)
        received = 0
        with PeakRSS(proxy) as mem_out, conn.cursor().copy("copy t_big to stdout") as copy:
            for data in copy:
                received += len(data)
        assert received == 150 * len(block)
    assert mem_in.growth_mb < 64, mem_in.growth_mb
    assert mem_out.growth_mb < 64, mem_out.growth_mb


def test_slow_client_keeps_proxy_memory_bounded(proxy: ProxyProcess, pg: PgServer) -> None:
    client = RawClient(proxy.host, proxy.port, timeout=60)
    client.startup(pg.user, pg.database)
    client.send(codec.encode_query(
        "copy (select repeat('z', 1000) from generate_series(1, 300000)) to stdout"))  # fmt: skip
    with PeakRSS(proxy) as mem:
        time.sleep(2.0)  # the client reads nothing while the server has 300 MB to send
    assert mem.growth_mb < 64, mem.growth_mb
    rows = 0
    while True:
        msg = client.read_message()
        assert msg is not None
        if msg[0] == codec.BE.COPY_DATA:
            rows += 1
        elif msg[0] == codec.BE.READY_FOR_QUERY:
            break
    assert rows == 300_000
    client.close()
