"""`sqlxos proxy`: load config, start the listeners, handle signals, drain on exit.

SIGTERM/SIGINT: stop accepting, let in-flight statements finish (bounded by
`proxy.drain_timeout_s`), exit 0. SIGHUP: load the config again; a snapshot
that does not validate is rejected with a log line and the old one stays.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog
import uvloop

from sqlx.agents import catalog_mysql
from sqlx.agents.archive import Archive
from sqlx.agents.autoprepare import AutoPrepare
from sqlx.agents.catalog import CatalogStore
from sqlx.agents.catalog_mysql import aiomysql_kwargs, read_mysql_catalog
from sqlx.agents.decider import MYSQL_CATALOG, PolicyDecider
from sqlx.agents.explain import ExplanationLog
from sqlx.agents.model_watch import ModelWatch
from sqlx.agents.plan_cache import PlanCache
from sqlx.air.cache import LoweringCache
from sqlx.cli.console_sources import console_sources
from sqlx.cli.logs import configure_logging
from sqlx.config import Config, ConfigError, load_config
from sqlx.config.policy import PolicyError, load_policy
from sqlx.proxy.console import AdminConsole
from sqlx.proxy.decision import Decider
from sqlx.proxy.embedded import ClusterError, LocalCluster
from sqlx.proxy.http import Handler, HttpServer
from sqlx.proxy.mysql.server import MySqlProxy, parse_mysql_dsn
from sqlx.proxy.pg.server import PgProxy, server_tls_context
from sqlx.proxy.pg.upstream import (
    UpstreamTarget,
    asyncpg_kwargs,
    client_tls_context,
    parse_dsn,
)
from sqlx.proxy.runtime import tune_gc
from sqlx.proxy.telemetry import Instrumented, Telemetry

log = structlog.get_logger("sqlx")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.listen:
        out.setdefault("proxy", {})["listen"] = args.listen
    if args.upstream:
        out.setdefault("upstream", {})["dsn"] = args.upstream
    if args.data_dir:
        out["data_dir"] = args.data_dir
    if args.http_listen:
        out.setdefault("http", {})["listen"] = args.http_listen
    if getattr(args, "mysql_listen", None):
        out.setdefault("mysql", {})["listen"] = args.mysql_listen
    if getattr(args, "mysql_upstream", None):
        out.setdefault("mysql", {})["upstream_dsn"] = args.mysql_upstream
    if getattr(args, "policy", None):
        out.setdefault("policy", {})["packs"] = list(args.policy)
    return out


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


async def _reachable(target: UpstreamTarget) -> bool:
    try:
        async with asyncio.timeout(1.0):
            if target.unix_path:
                _, writer = await asyncio.open_unix_connection(target.unix_path)
            else:
                _, writer = await asyncio.open_connection(target.host, target.port)
        writer.close()
        return True
    except (OSError, TimeoutError):
        return False


class ProxyApp:
    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        self.args = args
        self.config = config
        self.embedded: LocalCluster | None = None
        self.stopping = asyncio.Event()

    async def _target(self, config: Config) -> UpstreamTarget:
        if config.upstream.dsn:
            return parse_dsn(config.upstream.dsn)
        if self.embedded is None:
            cluster = LocalCluster(config.data_dir.absolute() / "pg")
            await asyncio.to_thread(cluster.start)
            self.embedded = cluster
        return parse_dsn(self.embedded.dsn())

    def reload(self) -> None:
        try:
            config = load_config(self.args.config, _overrides(self.args))
            target = parse_dsn(config.upstream.dsn) if config.upstream.dsn else self.proxy.target
            # Build the TLS context now: a missing or bad certificate rejects the reload.
            tls = server_tls_context(config)
            policy = load_policy(config.policy.packs)
        except (ConfigError, PolicyError, ValueError, OSError, ssl.SSLError) as exc:
            log.error("config reload rejected; keeping the running config", error=str(exc))
            return
        self.decider.reload(policy)
        self.models.check(force=True)
        if self.proxy.console is not None:
            self.proxy.console.users = frozenset(config.admin.users)
        log.info("policy loaded", packs=[str(p) for p in config.policy.packs],
                 rules=len(policy.rules))  # fmt: skip
        if config.proxy.listen != self.config.proxy.listen:
            log.warning("proxy.listen changes take effect on restart", listen=config.proxy.listen)
        self.config = config
        self.proxy.reconfigure(config, target, tls)
        log.info("config reloaded", upstream=target.describe())

    async def run(self) -> int:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            target = await self._target(config)
        except (ClusterError, ValueError) as exc:
            log.error("no upstream", error=str(exc))
            return 1
        try:
            policy = load_policy(config.policy.packs)
        except PolicyError as exc:
            log.error("invalid policy", error=str(exc))
            return 1
        self.explanations = ExplanationLog(
            config.data_dir, config.explain.max_bytes, config.explain.keep_files,
            config.explain.retention_days,
        )  # fmt: skip
        catalogs = CatalogStore(asyncpg_kwargs(target), policy.comment_tag_prefix)
        # One cache of lowered statements for the decider and the spans.
        lowering = LoweringCache(config.policy.decision_cache_size)
        self.decider = PolicyDecider(policy, catalogs, self.explanations,
                                     config.policy.decision_cache_size, lowering)  # fmt: skip
        catalogs.on_change = self.decider.invalidate
        loop = asyncio.get_running_loop()
        refresher = loop.create_task(catalogs.refresh_every(config.policy.catalog_refresh_s))
        self.telemetry: Telemetry | None = None
        decider: Decider = self.decider
        aif = config.aif
        self.plans = PlanCache(aif.plan_cache, aif.models, aif.reward)
        # The model is loaded (and its sha256 checked) before any client is accepted.
        self.models = ModelWatch(config.data_dir / aif.models.registry, aif.models.reward_regressor,
                                 self.plans, self.explanations)  # fmt: skip
        self.models.start()
        self.auto_prepare: AutoPrepare | None = None
        if aif.auto_prepare.enabled:
            self.auto_prepare = AutoPrepare(decider, aif.auto_prepare, self.explanations,
                                            self.plans)  # fmt: skip
            decider = self.auto_prepare
        if config.telemetry.enabled:
            telemetry = config.telemetry
            self.telemetry = Telemetry(config.data_dir, telemetry.sampling_ratio,
                                       telemetry.otlp_endpoint, lowering=lowering)  # fmt: skip
            decider = Instrumented(decider, self.telemetry)
            self.telemetry.plans = self.plans
        background = [refresher, loop.create_task(self.models.watch())]
        if aif.plan_cache.explain:
            kwargs = asyncpg_kwargs(target)

            async def connect(database: str) -> asyncpg.Connection:
                return await asyncpg.connect(**{**kwargs, "database": database})

            background.append(loop.create_task(self.plans.sample_plans(connect)))
        self.archive: Archive | None = None
        self.last_reward = 0.0
        windows = None
        if self.telemetry is not None and config.aif.archive.enabled:
            self.archive = Archive(config.data_dir, config.aif.archive, config.aif.reward,
                                   self._rewarded)  # fmt: skip
            self._window_start = time.time()
            windows = asyncio.get_running_loop().create_task(self._windows())
        if config.policy.packs:
            log.info("policy loaded", packs=[str(p) for p in config.policy.packs],
                     rules=len(policy.rules))  # fmt: skip
        try:
            self.proxy = PgProxy(config, target, decider)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot load the TLS certificate", error=str(exc))
            return 1
        self.proxy.console = self._console(config, target)
        host, port = _split(config.proxy.listen)
        tune_gc()
        try:
            port = await self.proxy.start(host, port)
        except OSError as exc:
            log.error("cannot listen", listen=config.proxy.listen, error=str(exc))
            return 1
        self.mysql: MySqlProxy | None = None
        if config.mysql.upstream_dsn:
            if not await self._start_mysql(config, decider, policy.comment_tag_prefix):
                return 1
            mysql_catalogs = self.decider.mysql_catalogs
            assert mysql_catalogs is not None
            refresh_s = config.policy.catalog_refresh_s
            background.append(loop.create_task(mysql_catalogs.refresh_every(refresh_s)))
        http = None
        if config.http.enabled:
            routes: dict[str, Handler] = {"/healthz": self._health}
            if self.telemetry is not None:
                self._gauges(self.telemetry)
                routes["/metrics"] = self._metrics
            http = HttpServer(routes)
            try:
                await http.start(*_split(config.http.listen))
            except OSError as exc:
                log.error("cannot listen", listen=config.http.listen, error=str(exc))
                return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        user = self.embedded.superuser if self.embedded else "<user>"
        database = "postgres" if self.embedded else "<database>"
        log.info("listening", listen=f"{host}:{port}", upstream=target.describe())
        print(
            f"sqlx-os proxy on {host}:{port} -> {target.describe()}\n"
            f"connect: psql -h {host} -p {port} -U {user} {database}",
            flush=True,
        )
        await self.stopping.wait()
        log.info("draining", timeout_s=self.config.proxy.drain_timeout_s)
        drains = [self.proxy.drain(self.config.proxy.drain_timeout_s)]
        if self.mysql is not None:
            drains.append(self.mysql.drain(self.config.proxy.drain_timeout_s))
        await asyncio.gather(*drains)
        if http is not None:
            await http.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        for task in background:
            task.cancel()
        if windows is not None and self.archive is not None:
            windows.cancel()
            self._close_window()
            await asyncio.to_thread(self.archive.close)
        await asyncio.to_thread(self.explanations.close)
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.close)
        log.info("stopped")
        return 0

    async def _start_mysql(self, config: Config, decider: Decider, prefix: str) -> bool:
        """The MySQL listener, in front of `mysql.upstream_dsn`, with the same decider, and
        the server's catalog read over the DSN's user."""
        assert config.mysql.upstream_dsn
        try:
            target = parse_mysql_dsn(config.mysql.upstream_dsn)
            tls = client_tls_context(target) if target.sslmode != "disable" else None
            catalogs = CatalogStore(aiomysql_kwargs(target.user, target.password, target.host,
                                                    target.port, tls), prefix,
                                    self.decider.invalidate, read_mysql_catalog,
                                    catalog_mysql.ERRORS)  # fmt: skip
            self.decider.mysql_catalogs = catalogs
            self.mysql = MySqlProxy(target, decider, max_packet_bytes=config.mysql.max_packet_bytes,
                                    connect_timeout_s=config.proxy.connect_timeout_s,
                                    tls_context=server_tls_context(config),
                                    prepare=lambda: catalogs.prepare(MYSQL_CATALOG))  # fmt: skip
            host, port = _split(config.mysql.listen)
            port = await self.mysql.start(host, port)
        except (ValueError, OSError, ssl.SSLError) as exc:
            log.error("cannot start the MySQL listener", listen=config.mysql.listen,
                      error=str(exc))  # fmt: skip
            return False
        log.info("listening (MySQL)", listen=f"{host}:{port}", upstream=target.describe())
        return True

    def _console(self, config: Config, target: UpstreamTarget) -> AdminConsole:
        sources = console_sources(self.proxy, self.decider, self.telemetry, self.explanations,
                                  self.reload, self.plans)  # fmt: skip
        return AdminConsole(config.admin.users, target.database or "postgres", sources)

    async def _windows(self) -> None:
        """Close the archive's window every `aif.archive.window_s` seconds."""
        while True:
            await asyncio.sleep(self.config.aif.archive.window_s)
            self._close_window()

    def _close_window(self) -> None:
        assert self.telemetry is not None and self.archive is not None
        now = time.time()
        rows = self.telemetry.fingerprints.close_window()
        self.plans.absorb(rows)
        self.archive.submit(rows, self._window_start, now)
        self._window_start = now

    def _rewarded(self, mean_reward: float, shapes: int) -> None:
        """A window reached the archive (called from its thread)."""
        self.last_reward = mean_reward
        log.info("ai.reward.emit", stream=self.config.aif.streams.reward, shapes=shapes,
                 reward=round(mean_reward, 4))  # fmt: skip

    def _gauges(self, telemetry: Telemetry) -> None:
        proxy, decider = self.proxy, self.decider
        telemetry.gauge("sqlx_client_connections", "Client connections open",
                        lambda: len(proxy.clients))  # fmt: skip
        clients = proxy.clients.values
        telemetry.gauge("sqlx_upstream_connections", "Upstream connections open",
                        lambda: sum(c.upstream is not None for c in clients()))  # fmt: skip
        telemetry.gauge("sqlx_decision_cache_hits", "Decisions answered from the cache",
                        lambda: decider.hits)  # fmt: skip
        telemetry.gauge("sqlx_decision_cache_misses", "Decisions evaluated",
                        lambda: decider.misses)  # fmt: skip
        telemetry.gauge("sqlx_decision_cache_entries", "Decisions cached",
                        lambda: decider.cached)  # fmt: skip
        plans, auto = self.plans, self.auto_prepare
        telemetry.gauge("sqlx_plan_cache_hits", "Statements whose shape had a live entry",
                        lambda: plans.hits)  # fmt: skip
        telemetry.gauge("sqlx_plan_cache_misses", "Statements whose shape's entry was made or "
                        "refreshed", lambda: plans.misses)  # fmt: skip
        telemetry.gauge("sqlx_plan_cache_hit_ratio", "Plan cache hits / lookups",
                        lambda: plans.hit_ratio)  # fmt: skip
        telemetry.gauge("sqlx_plan_cache_entries", "Query shapes in the plan cache",
                        lambda: len(plans.entries))  # fmt: skip
        telemetry.gauge("sqlx_auto_prepared_templates", "Statement templates run prepared",
                        lambda: auto.prepared_templates if auto else 0)  # fmt: skip
        telemetry.gauge("sqlx_model_served", "1 if a registry model scores shapes, 0 if the "
                        "heuristic does", lambda: float(plans.model is not None))  # fmt: skip
        telemetry.gauge("sqlx_reward", "Mean reward (spec 4.1) of the last archived window",
                        lambda: self.last_reward)  # fmt: skip
        telemetry.gauge("sqlx_archive_rows", "Rows written to the ATS archive",
                        lambda: self.archive.rows_written if self.archive else 0)  # fmt: skip

    async def _metrics(self) -> tuple[int, str]:
        assert self.telemetry is not None
        return 200, self.telemetry.metrics_text()

    async def _health(self) -> tuple[int, dict[str, object]]:
        up = await _reachable(self.proxy.target)
        body: dict[str, object] = {
            "status": "ok" if up else "degraded",
            "upstream": self.proxy.target.describe(),
            "upstream_reachable": up,
            "clients": len(self.proxy.clients),
        }
        return (200 if up else 503), body


def run_proxy(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"sqlxos: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level)
    if args.config and not Path(args.config).exists():
        log.info("config file not found; using built-in defaults", path=args.config)

    async def main() -> int:
        return await ProxyApp(args, config).run()

    return uvloop.run(main())
