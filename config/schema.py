"""The configuration schema: every key, its type and its default.

Unknown keys are errors (`extra="forbid"`); models are frozen so a snapshot
cannot change under a running session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class TLSConfig(_Strict):
    """TLS towards clients. Both files set: the proxy answers SSLRequest with 'S'."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


class ProxyConfig(_Strict):
    """The PostgreSQL listener and its per-client limits."""

    listen: str = "127.0.0.1:6432"
    # PostgreSQL's own limit for one message is 1 GiB; messages the proxy
    # inspects (Query, Parse) are buffered up to this size, others stream.
    max_message_bytes: int = Field(default=1 << 30, ge=1024)
    # An extended-protocol batch is held until Sync/Flush so it can be decided
    # whole; past this size what is held so far is decided and released.
    max_held_batch_bytes: int = Field(default=16 << 20, ge=1024)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    tls: TLSConfig = TLSConfig()

    _v_listen = field_validator("listen")(_check_hostport)


class UpstreamConfig(_Strict):
    """The real database. No DSN: `sqlxos proxy` starts an embedded PostgreSQL."""

    dsn: str | None = None


class HTTPConfig(_Strict):
    """Health, metrics and control API."""

    listen: str = "127.0.0.1:9187"
    enabled: bool = True

    _v_listen = field_validator("listen")(_check_hostport)


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class PolicyConfig(_Strict):
    """Policy packs (YAML files with a top-level `policy:`), merged in order."""

    packs: tuple[Path, ...] = ()
    decision_cache_size: int = Field(default=10_000, ge=0)
    # Catalogs are read again after DDL through the proxy, and every this often.
    catalog_refresh_s: float = Field(default=60.0, gt=0)


class ExplainConfig(_Strict):
    """The explanation log (`explanations.jsonl` in the data dir)."""

    max_bytes: int = Field(default=64 << 20, ge=4096)
    keep_files: int = Field(default=5, ge=1)
    retention_days: float = Field(default=30.0, gt=0)


class TelemetryConfig(_Strict):
    """Metrics on the HTTP port and one span per statement."""

    enabled: bool = True
    # Share of statements traced; a client's traceparent comment overrides it.
    sampling_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    # OTLP/HTTP traces endpoint (http://collector:4318/v1/traces); unset: spans.jsonl.
    otlp_endpoint: str | None = None


class MySqlConfig(_Strict):
    """The MySQL listener: on when `upstream_dsn` is set."""

    listen: str = "127.0.0.1:6033"
    # mysql://user[:password]@host:port[/db]: where to connect; clients relay their own
    # credentials, the DSN's user is the proxy's own for side connections.
    upstream_dsn: str | None = None
    max_packet_bytes: int = Field(default=64 << 20, ge=1 << 16)

    _v_listen = field_validator("listen")(_check_hostport)


class AdminConfig(_Strict):
    """The admin console (database `sqlx` on the PostgreSQL listener)."""

    users: tuple[str, ...] = ()


class RewardWeights(_Strict):
    """The copilot's reward, spec §4.1: R = a1*(-latency_ms) + a2*(-error_rate)
    + a3*policy_compliance + a4*cache_hit_ratio + a5*availability."""

    latency: float = 0.01  # a1, per millisecond of mean latency
    error_rate: float = 1.0  # a2
    policy_compliance: float = 0.5  # a3
    cache_hit_ratio: float = 0.25  # a4
    availability: float = 1.0  # a5


class StreamsConfig(_Strict):
    """Names of the ATS learning streams (spec §5); the archive's rows carry both."""

    reward: str = "sqlx.learn.reward"
    embed: str = "sqlx.learn.embed"


class ArchiveConfig(_Strict):
    """The ATS archive: one Parquet row per query shape per window, in data_dir/ats."""

    enabled: bool = True
    window_s: float = Field(default=10.0, gt=0)  # one row per shape per window
    flush_s: float = Field(default=60.0, gt=0)  # a new Parquet file at least this often
    max_rows_per_file: int = Field(default=100_000, ge=1)
    retention_days: float = Field(default=30.0, gt=0)
    max_bytes: int = Field(default=1 << 30, ge=1 << 16)  # oldest files removed past this


class PlanCacheConfig(_Strict):
    """The predictive plan cache: one entry per query shape (fingerprint)."""

    max_entries: int = Field(default=10_000, ge=1)  # least recently used dropped past this
    ttl_s: float = Field(default=600.0, gt=0)  # a plan and a score are taken again after this
    explain: bool = True  # sample each shape's plan with EXPLAIN (FORMAT JSON), off the hot path
    explain_timeout_s: float = Field(default=2.0, gt=0)


class AutoPrepareConfig(_Strict):
    """Simple-protocol statements run as server-side prepared statements once their
    template repeats."""

    enabled: bool = True
    threshold: int = Field(default=3, ge=1)  # executions of one template before it is prepared
    max_per_connection: int = Field(default=256, ge=1)  # statements prepared per upstream
    max_templates: int = Field(default=10_000, ge=1)  # templates counted (least recent dropped)


class ModelsConfig(_Strict):
    """The reward model the proxy serves (spec §6 and §13's `aif.models`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    reward_regressor: str = Field(default="sqlx-reward-regressor-v1", alias="rewardRegressor")
    # The registry: `registry.json` and the artifacts; relative paths are under data_dir.
    registry: Path = Path("models")
    # A shape whose predicted latency (ms) is at least this is classed `heavy`.
    heavy_ms: float = Field(default=5.0, gt=0)


class AifConfig(_Strict):
    """The copilot (spec §13's `aif:` section)."""

    reward: RewardWeights = RewardWeights()
    streams: StreamsConfig = StreamsConfig()
    archive: ArchiveConfig = ArchiveConfig()
    plan_cache: PlanCacheConfig = PlanCacheConfig()
    auto_prepare: AutoPrepareConfig = AutoPrepareConfig()
    models: ModelsConfig = ModelsConfig()


class Config(_Strict):
    """One complete configuration snapshot."""

    data_dir: Path = Path("./var")
    proxy: ProxyConfig = ProxyConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    http: HTTPConfig = HTTPConfig()
    log: LogConfig = LogConfig()
    policy: PolicyConfig = PolicyConfig()
    explain: ExplainConfig = ExplainConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    admin: AdminConfig = AdminConfig()
    aif: AifConfig = AifConfig()
    mysql: MySqlConfig = MySqlConfig()
