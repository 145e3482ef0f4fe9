"""Start-up configuration: flags with DISPATCHD_* environment equivalents, read once
into a frozen, validated dataclass."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
METRICS_OFF = "0"
BACKENDS = ("embedded", "redis")
#: What a message may carry beyond its payloads: ids, headers, keys, times and the
#: protobuf framing of up to 10,000 jobs (a SubmitBatch's most) or results.
MESSAGE_HEADROOM_BYTES = 4 << 20
MAX_BATCH_BYTES_LIMIT = 1 << 30


class ConfigError(ValueError):
    """A flag or environment value is out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = "127.0.0.1:50051"
    """host:port the gRPC server binds (port 0 picks a free one)."""
    data_dir: Path | None = None
    """Where the journal (every acknowledged change) and the drain snapshot live; None
    keeps nothing across restarts."""
    drain_grace: float = 25.0
    """Seconds a drain waits for underway jobs before taking them back."""
    max_payload_bytes: int = 1 << 20
    """Cap on job payloads and results."""
    max_batch_bytes: int = 16 << 20
    """Cap on the payloads of one SubmitBatch, all together (at least max_payload_bytes
    counts, so that a batch of one job at the cap fits). With max_payload_bytes it bounds
    every gRPC message the server reads: see ``max_message_bytes``."""
    default_width: int = 10
    """Width of a queue created on first use."""
    default_lease: float = 30.0
    """Lease duration (seconds) of a queue created on first use."""
    finished_retention: float = 3600.0
    """Seconds finished jobs stay readable by GetJob/WaitJob."""
    max_finished_jobs: int = 100_000
    """Most finished jobs kept in memory."""
    max_queues: int = 10_000
    """Most queues the server holds: creating one more (a submit or a worker naming a new
    queue, UpdateQueue with create, AcquireSlot) is refused with RESOURCE_EXHAUSTED
    (TOO_MANY_QUEUES). 0: no bound."""
    max_pending_total: int = 0
    """Most jobs waiting (pending and scheduled) across every queue: a submit that would
    pass it is refused with RESOURCE_EXHAUSTED (TOO_MANY_PENDING) and a retry delay. It
    bounds the memory the jobs take (the Helm chart derives it from the memory limit,
    docs/durability.md). 0: no bound."""
    log_level: str = "info"
    """debug, info, warning or error."""
    durability: str = "journal"
    """journal: every change goes to <data-dir>/journal.sqlite3 and a Submit is answered
    once it is durable; none: memory only (plus the drain snapshot). Needs --data-dir."""
    recover_truncated: bool = False
    """Start even if a journal record or the snapshot is damaged, dropping what is lost."""
    log_format: str = "text"
    """text (one readable line per event) or json (one object per line, for collectors)."""
    metrics_listen: str = "127.0.0.1:9464"
    """host:port of the Prometheus /metrics endpoint (port 0 picks a free one); "0"
    turns metrics off, and with them their cost on the hot path."""
    http_listen: str = "127.0.0.1:8080"
    """host:port of the operator dashboard (port 0 picks a free one); "0" turns it off."""
    dashboard_allowed_hosts: str = ""
    """Comma-separated host names the dashboard answers for besides IP literals and
    localhost (the names of an ingress in front of it); any other Host is refused, so a
    DNS-rebinding page cannot reach it through a visitor's browser."""
    dashboard_bucket: float = 5.0
    """Seconds per bucket of the dashboard's sparklines, which show the last 60 buckets
    (5 minutes by default)."""
    metrics_max_queues: int = 100
    """Queues that get their own ``queue`` label; later ones share ``queue="_other"``, so
    a client inventing queue names cannot blow up the series count."""
    tls_cert: Path | None = None
    """PEM certificate chain: serve gRPC over TLS (needs tls_key)."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: require client certificates it signed (mTLS; needs tls_cert)."""
    auth_tokens: Path | None = None
    """Bearer tokens by role (``ROLE TOKEN [NAME]`` lines); None: no token checks."""
    metrics_token_file: Path | None = None
    """A file holding one bearer token /metrics then requires (Prometheus: a scrape
    config's ``authorization: credentials_file``); None: /metrics is open to whoever
    reaches its port, which is why it binds to loopback by default."""
    health_listen: str | None = None
    """host:port of a plaintext, health-only gRPC port for probes (kubelet gRPC probes
    cannot speak TLS); None: health is served on the main port only."""
    http_max_connections: int = 100
    """Per HTTP target: the connection pool's bound and the most calls in flight at once
    (a queue's width binds below it)."""
    http_ca_bundle: Path | None = None
    """PEM file of CAs to verify HTTP targets' TLS certificates with; None: certifi's."""
    http_allow_cidr: tuple[str, ...] = ()
    """Networks HTTP targets may reach beyond public unicast addresses (e.g. 10.0.0.0/8,
    fd00::/8 for internal services): loopback, private, link-local (cloud metadata),
    shared, multicast and reserved addresses are refused unless listed. Checked on the
    URL when a target is set and on every address a target's name resolves to, at every
    connection (docs/security.md). ``0.0.0.0/0,::/0`` allows every address."""
    backend: str = "embedded"
    """embedded: this process holds the queues (memory + journal); redis: the queues live
    in Redis (--redis-url) and several replicas share them (docs/redis.md)."""
    redis_url: str = ""
    """redis://, rediss:// (TLS), unix://, redis+sentinel://host:port[,...]/service[/db]
    or redis+cluster://host:port[,...] (a Redis Cluster); needed by --backend redis."""
    keepalive_time: float = 20.0
    """Seconds of quiet after which the server pings a connection (and drops it when no
    answer comes within half that): how soon a worker behind a dead connection loses its
    stream and its jobs go back."""
    port_file: Path | None = None
    """Once serving, write the bound ports here as JSON ({"grpc": .., "metrics": ..,
    "dashboard": .., "health": ..}; 0 where off), replacing the file atomically: how a
    script finds the port --listen 127.0.0.1:0 picked."""

    def __post_init__(self) -> None:
        if self.drain_grace < 0:
            raise ConfigError(f"--drain-grace must be >= 0, got {self.drain_grace}")
        if not 1 <= self.max_payload_bytes <= 64 << 20:
            raise ConfigError(
                f"--max-payload-bytes must be 1..{64 << 20}, got {self.max_payload_bytes}"
            )
        if not 1 <= self.max_batch_bytes <= MAX_BATCH_BYTES_LIMIT:
            raise ConfigError(
                f"--max-batch-bytes must be 1..{MAX_BATCH_BYTES_LIMIT}, got {self.max_batch_bytes}"
            )
        if self.default_width < 0:
            raise ConfigError(f"--default-width must be >= 0, got {self.default_width}")
        if not 1.0 <= self.default_lease <= 3600.0:
            raise ConfigError(f"--default-lease must be 1..3600 s, got {self.default_lease}")
        if self.finished_retention < 0 or self.max_finished_jobs < 0:
            raise ConfigError("--finished-retention and --max-finished-jobs must be >= 0")
        if not 0 <= self.max_queues <= 100_000_000:
            raise ConfigError(f"--max-queues must be 0..100000000, got {self.max_queues}")
        if not 0 <= self.max_pending_total <= 10_000_000_000:
            raise ConfigError(
                f"--max-pending-total must be 0..10000000000, got {self.max_pending_total}"
            )
        if self.durability not in ("none", "journal"):
            raise ConfigError(f"--durability must be none or journal, got {self.durability!r}")
        self._check_http_push()
        if not 0.1 <= self.dashboard_bucket <= 60.0:
            raise ConfigError(f"--dashboard-bucket must be 0.1..60 s, got {self.dashboard_bucket}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        self._check_backend()
        self._check_endpoints()

    def _check_http_push(self) -> None:
        if not 1.0 <= self.keepalive_time <= 3600.0:
            raise ConfigError(f"--keepalive-time must be 1..3600 s, got {self.keepalive_time}")
        if not 1 <= self.http_max_connections <= 10_000:
            raise ConfigError(
                f"--http-max-connections must be 1..10000, got {self.http_max_connections}"
            )
        for cidr in self.http_allow_cidr:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as e:
                raise ConfigError(f"--http-allow-cidr: {cidr!r} is not a CIDR ({e})") from None

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be embedded or redis, got {self.backend!r}")
        if self.backend == "redis" and not self.redis_url:
            raise ConfigError("--backend redis needs --redis-url (e.g. redis://host:6379/0)")
        if self.backend == "embedded" and self.redis_url:
            raise ConfigError("--redis-url is only used with --backend redis")

    def _check_endpoints(self) -> None:
        """Addresses, metrics and TLS: the settings of how the server is reached."""
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if not 1 <= self.metrics_max_queues <= 10_000:
            raise ConfigError(
                f"--metrics-max-queues must be 1..10000, got {self.metrics_max_queues}"
            )
        _check_address("--listen", self.listen)
        if self.metrics_listen != METRICS_OFF:
            _check_address("--metrics-listen", self.metrics_listen, off=METRICS_OFF)
        if self.http_listen != METRICS_OFF:
            _check_address("--http-listen", self.http_listen, off=METRICS_OFF)
        if self.health_listen is not None:
            _check_address("--health-listen", self.health_listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message the server reads (a Submit, a SubmitBatch, one message
        of a Work stream): the larger of max_payload_bytes and max_batch_bytes plus
        MESSAGE_HEADROOM_BYTES. grpc refuses a bigger one with RESOURCE_EXHAUSTED from its
        length prefix, before the auth check runs and without reading it."""
        return max(self.max_payload_bytes, self.max_batch_bytes) + MESSAGE_HEADROOM_BYTES

    @property
    def journaled(self) -> bool:
        return self.durability == "journal" and self.data_dir is not None

    @property
    def http_enabled(self) -> bool:
        return self.http_listen != METRICS_OFF

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_listen != METRICS_OFF


def _check_address(flag: str, value: str, off: str | None = None) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        alt = f' or "{off}" to turn it off' if off is not None else ""
        raise ConfigError(f"{flag} must be host:port{alt}, got {value!r}")


def _env(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get("DISPATCHD_" + name.upper().replace("-", "_"), default)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="dispatchd",
        description="gRPC job dispatcher. Every flag also reads DISPATCHD_<FLAG> from the "
        "environment (e.g. DISPATCHD_LISTEN); a flag on the command line wins.",
    )

    def add(name: str, kind: type, default: object, help: str) -> None:
        p.add_argument(
            f"--{name}",
            type=kind,
            default=kind(_env(env, name, str(default))),
            help=f"{help} (default: %(default)s)",
        )

    add("listen", str, d.listen, "host:port to serve gRPC on")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=_env(env, "data-dir", "") or None,
        help="directory for the journal and the drain snapshot (default: none: memory only, "
        "nothing kept across restarts)",
    )
    add("drain-grace", float, d.drain_grace, "seconds to wait for underway jobs on drain")
    add("max-payload-bytes", int, d.max_payload_bytes, "cap on job payloads and results")
    add(
        "max-batch-bytes",
        int,
        d.max_batch_bytes,
        "cap on one SubmitBatch's payloads, all together (with --max-payload-bytes it bounds "
        "every message the server reads)",
    )
    add("default-width", int, d.default_width, "width of queues created on first use")
    add("default-lease", float, d.default_lease, "lease seconds of queues created on first use")
    add("finished-retention", float, d.finished_retention, "seconds finished jobs stay readable")
    add("max-finished-jobs", int, d.max_finished_jobs, "most finished jobs kept")
    add("max-queues", int, d.max_queues, "most queues; creating one more is refused (0: none)")
    add(
        "max-pending-total",
        int,
        d.max_pending_total,
        "most jobs waiting across all queues; submits past it are refused (0: no bound)",
    )
    add("log-level", str, d.log_level, "debug, info, warning or error")
    add("durability", str, d.durability, "journal (crash-safe, needs --data-dir) or none")
    add(
        "http-max-connections",
        int,
        d.http_max_connections,
        "per HTTP target: connections and calls in flight at most",
    )
    p.add_argument(
        "--http-ca-bundle",
        type=Path,
        default=_env(env, "http-ca-bundle", "") or None,
        help="PEM CA bundle to verify HTTP targets' TLS certificates (default: certifi's)",
    )
    add(
        "http-allow-cidr",
        str,
        "",
        "comma-separated networks HTTP targets may reach besides public addresses "
        "(e.g. 10.0.0.0/8,fd00::/8); loopback, private and metadata addresses are refused",
    )
    p.add_argument(
        "--recover-truncated",
        action="store_true",
        default=_env(env, "recover-truncated", "") in ("1", "true", "yes"),
        help="start even if a journal record or the snapshot is damaged, dropping it",
    )
    add("log-format", str, d.log_format, "text or json")
    add("metrics-listen", str, d.metrics_listen, 'host:port for Prometheus /metrics; "0" is off')
    add("http-listen", str, d.http_listen, 'host:port for the operator dashboard; "0" is off')
    add(
        "dashboard-allowed-hosts",
        str,
        d.dashboard_allowed_hosts,
        "comma-separated host names the dashboard answers for besides IPs and localhost",
    )
    add("dashboard-bucket", float, d.dashboard_bucket, "seconds per dashboard sparkline bucket")
    add("metrics-max-queues", int, d.metrics_max_queues, "queues with their own metric label")
    add("backend", str, d.backend, "embedded (one process) or redis (replicas share Redis)")
    add("keepalive-time", float, d.keepalive_time, "seconds of quiet before a connection is pinged")
    add("redis-url", str, d.redis_url, "Redis to use with --backend redis (redis://, rediss://)")

    def add_optional(name: str, kind: type, help: str) -> None:
        p.add_argument(f"--{name}", type=kind, default=_env(env, name, "") or None, help=help)

    add_optional("tls-cert", Path, "PEM certificate chain; serves TLS (default: plaintext)")
    add_optional("tls-key", Path, "PEM private key of --tls-cert")
    add_optional("tls-client-ca", Path, "PEM CA bundle; clients need a certificate it signed")
    add_optional("auth-tokens", Path, "file of `ROLE TOKEN [NAME]` lines (default: no auth)")
    add_optional("metrics-token-file", Path, "file with the bearer token /metrics requires")
    add_optional("health-listen", str, "host:port of a plaintext health-only port for probes")
    add_optional("port-file", Path, "once serving, write the bound ports there as JSON")
    return p


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Parses flags over environment over defaults. Raises ConfigError or SystemExit(2)."""
    env = os.environ if env is None else env
    try:
        ns = build_parser(env).parse_args(argv)
    except ValueError as e:  # a bad DISPATCHD_* value fails in the default's conversion
        raise ConfigError(f"bad environment value: {e}") from None
    return Config(
        listen=ns.listen,
        data_dir=Path(ns.data_dir) if ns.data_dir else None,
        drain_grace=ns.drain_grace,
        max_payload_bytes=ns.max_payload_bytes,
        max_batch_bytes=ns.max_batch_bytes,
        default_width=ns.default_width,
        default_lease=ns.default_lease,
        finished_retention=ns.finished_retention,
        max_finished_jobs=ns.max_finished_jobs,
        max_queues=ns.max_queues,
        max_pending_total=ns.max_pending_total,
        log_level=ns.log_level,
        durability=ns.durability,
        recover_truncated=ns.recover_truncated,
        log_format=ns.log_format,
        metrics_listen=ns.metrics_listen,
        metrics_max_queues=ns.metrics_max_queues,
        http_listen=ns.http_listen,
        dashboard_allowed_hosts=ns.dashboard_allowed_hosts,
        dashboard_bucket=ns.dashboard_bucket,
        tls_cert=_path(ns.tls_cert),
        tls_key=_path(ns.tls_key),
        tls_client_ca=_path(ns.tls_client_ca),
        auth_tokens=_path(ns.auth_tokens),
        metrics_token_file=_path(ns.metrics_token_file),
        health_listen=ns.health_listen or None,
        http_max_connections=ns.http_max_connections,
        http_ca_bundle=_path(ns.http_ca_bundle),
        http_allow_cidr=tuple(c.strip() for c in ns.http_allow_cidr.split(",") if c.strip()),
        backend=ns.backend,
        redis_url=ns.redis_url,
        port_file=_path(ns.port_file),
        keepalive_time=ns.keepalive_time,
    )


def _path(value: object) -> Path | None:
    return Path(str(value)) if value else None
