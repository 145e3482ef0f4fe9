"""--redis-url -> a redis-py asyncio client. redis://, rediss:// (TLS) and unix:// go to
redis-py's own URL parser; redis+sentinel://host:port[,host:port]/service[/db] asks the
Sentinels for the current master (and follows fail-overs); redis+cluster://host:port
[,host:port] (rediss+cluster:// with TLS) is a Redis Cluster, found from any of the nodes
named (redis-py's RedisCluster follows MOVED/ASK and fail-overs of a primary)."""

from __future__ import annotations

from typing import cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from dispatchd.redis.errors import RedisUrlError

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CONNECT_TIMEOUT = 5.0
#: A command (a script) that takes longer than this fails its RPC with UNAVAILABLE.
COMMAND_TIMEOUT = 10.0
#: A pooled connection idle this long is PINGed before it is used again, and replaced if
#: that fails: after Redis restarted, no call goes out on a connection that died with it.
HEALTH_CHECK_SECONDS = 1


def check_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise RedisUrlError(
            f"--redis-url {_redacted(url)!r}: scheme must be one of "
            f"{', '.join(s + '://' for s in SCHEMES)}"
        )
    if scheme == "redis+sentinel":
        _sentinel_parts(url)
    if scheme in CLUSTER_SCHEMES:
        _cluster_parts(url)


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(":" + parts.password + "@", ":***@", 1)


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise RedisUrlError(
            f"--redis-url {_redacted(url)!r}: a Sentinel URL is "
            "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]"
        )
    nodes = _hosts(url, "Sentinel")
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    password = unquote(parts.password) if parts.password else None
    return nodes, path[0], db, password


def _hosts(url: str, what: str) -> list[tuple[str, int]]:
    nodes = []
    for item in urlsplit(url).netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise RedisUrlError(f"--redis-url: {what} address {item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def _cluster_parts(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    parts = urlsplit(url)
    if not parts.netloc.rpartition("@")[2] or parts.path.strip("/") not in ("", "0"):
        raise RedisUrlError(
            f"--redis-url {_redacted(url)!r}: a Cluster URL is "
            "redis+cluster://[[user]:password@]host:port[,host:port...] (no db: a Cluster "
            "has only db 0)"
        )
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    return _hosts(url, "Cluster node"), username, password


def _cluster_client(url: str) -> RedisCluster:
    nodes, username, password = _cluster_parts(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username,
        password=password,
        ssl=url.startswith("rediss+"),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        health_check_interval=HEALTH_CHECK_SECONDS,
        # redis-py's default retry (3 tries, jittered backoff) follows MOVED/ASK and,
        # after a connection error, re-reads the slot map: a primary that died is
        # replaced by its replica within the cluster's node timeout, and commands
        # meanwhile fail (UNAVAILABLE to the caller).
    )


def client(url: str) -> Redis:
    """A client for ``url``; connects lazily (the first command). A Cluster client is
    returned as the Redis type the rest of the backend is written against: it takes
    every command and pipeline the backend sends (each script's keys share one slot;
    redis/store.py's ``cluster`` says which one it is where they differ: pub/sub)."""
    """A client for ``url``; connects lazily (the first command)."""
    check_url(url)
    if is_cluster(url):
        return cast(Redis, _cluster_client(url))
    if url.startswith("redis+sentinel://"):
        nodes, service, db, password = _sentinel_parts(url)
        options = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": COMMAND_TIMEOUT,
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            nodes, sentinel_kwargs=options, password=password, **options
        )
        master: Redis = sentinel.master_for(
            service, db=db, health_check_interval=HEALTH_CHECK_SECONDS
        )
        return master
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
