"""A real redis-server on a free port, for the Redis backend's tests; stopped by pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import redis

from .polling import until


class RedisProcess:
    """``redis-server --save '' --appendonly no``: nothing touches the disk."""

    def __init__(
        self, workdir: Path, port: int = 0, persist: bool = False, replica_of: int = 0
    ) -> None:
        """``port`` 0 picks a free one; another port starts a Redis where one stopped.
        ``persist`` keeps an append-only file (fsync'd every write) in ``workdir``, so a
        Redis started again on it has everything acknowledged before it stopped.
        ``replica_of``: a replica of the Redis on that loopback port."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it with apt")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if persist else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(workdir),
                *(["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._wait_ready()

    def _wait_ready(self, within: float = 10.0) -> None:
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            until(answers, within, "redis-server to answer PING", interval=0.02)
        finally:
            client.close()

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def info(self, section: str) -> dict[str, object]:
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            return dict(client.info(section))
        except redis.RedisError:
            return {}
        finally:
            client.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports, each with its cluster-bus port (+10000) free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class RedisClusterProcess:
    """A real Redis Cluster on loopback: ``primaries`` redis-servers with
    ``--cluster-enabled yes``, each in its own directory, joined by ``redis-cli --cluster
    create`` (``replicas`` replicas per primary); stopped by pid. ``persist`` keeps an
    append-only file fsync'd on every write (appendfsync always)."""

    def __init__(
        self,
        workdir: Path,
        primaries: int = 3,
        replicas: int = 0,
        persist: bool = False,
        node_timeout_ms: int = 1000,
    ) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it with apt")
        self.ports = _free_ports(primaries * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if persist else "no",
                    "--appendfsync",
                    "always",
                    "--dir",
                    str(node_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            for port in self.ports:
                self._wait_answers(port)
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{p}" for p in self.ports),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )
            self.wait_ok()
            if replicas:
                self.wait_replicas_synced()
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def _wait_answers(self, port: int) -> None:
        client = self._client(port)

        def answers() -> bool:
            proc = self.procs[port]
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server :{port} exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            until(answers, 10.0, f"redis-server :{port} to answer PING", interval=0.02)
        finally:
            client.close()

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def info(self, port: int, section: str) -> dict[str, object]:
        client = self._client(port)
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def wait_ok(self, within: float = 30.0) -> None:
        """Every live node says cluster_state:ok and every slot has a primary."""

        def ok() -> bool:
            for port in self.alive():
                client = self._client(port)
                try:
                    text = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                except redis.RedisError:
                    return False
                finally:
                    client.close()
                text = text.decode() if isinstance(text, bytes) else str(text)
                if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                    return False
            return True

        until(ok, within, "the Redis Cluster to report cluster_state:ok", interval=0.05)

    def wait_replicas_synced(self, within: float = 30.0) -> None:
        """Every live replica has its primary's data (a replica that never synced cannot
        take over)."""

        def synced() -> bool:
            for port in self.alive():
                repl = self.info(port, "replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return len(self.primaries()) < len(self.alive())

        until(synced, within, "the cluster's replicas to sync", interval=0.05)

    def wait_failover(self, dead: int, within: float = 30.0) -> int:
        """After ``dead`` (a primary) died: waits until one of its replicas is a primary
        and the cluster is ok again; returns the new primary's port."""
        replicas = [
            p for p in self.alive() if self.info(p, "replication").get("master_port") == dead
        ]
        assert replicas, f"node :{dead} had no live replica"

        def promoted() -> bool:
            return any(self.info(p, "replication").get("role") == "master" for p in replicas)

        until(promoted, within, f"a replica of :{dead} to be promoted", interval=0.05)
        self.wait_ok(within)
        return next(p for p in replicas if self.info(p, "replication").get("role") == "master")

    def primaries(self) -> list[int]:
        """The ports of the live nodes that are primaries now."""
        return [p for p in self.alive() if self.info(p, "replication").get("role") == "master"]

    def flush(self) -> None:
        for port in self.primaries():
            client = self._client(port)
            try:
                client.flushall()
            finally:
                client.close()

    def kill(self, port: int) -> None:
        """kill -9 of one node's process."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class RedisSentinelSetup:
    """One primary and one replica (append-only files fsync'd on every write) watched by
    ``sentinels`` ``redis-sentinel`` processes (quorum 2) on loopback; stopped by pid.
    ``down_after_ms`` and ``failover_timeout_ms`` are low, so a fail-over takes about a
    second or two instead of Redis' default half a minute."""

    SERVICE = "dispatchd"

    def __init__(
        self,
        workdir: Path,
        sentinels: int = 3,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        sentinel = shutil.which("redis-sentinel")
        if sentinel is None:
            raise RuntimeError("redis-sentinel is not installed; `make test` installs it with apt")
        self.primary = RedisProcess(workdir / "primary", persist=True)
        self.replica = RedisProcess(workdir / "replica", persist=True, replica_of=self.primary.port)
        self.sentinel_ports = _free_ports(sentinels)
        self._sentinels: list[subprocess.Popen[bytes]] = []
        try:
            for port in self.sentinel_ports:
                conf = workdir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                    f"sentinel down-after-milliseconds {self.SERVICE} {down_after_ms}\n"
                    f"sentinel failover-timeout {self.SERVICE} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {self.SERVICE} 1\n"
                )
                self._sentinels.append(
                    subprocess.Popen(
                        [sentinel, str(conf)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            self._wait_watching()
        except BaseException:
            self.stop()
            raise
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def _ask(self, port: int, *command: str) -> object:
        client = self._sentinel(port)
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _wait_watching(self, within: float = 30.0) -> None:
        """Every Sentinel knows the replica and the other Sentinels, and the replica has
        the primary's data: only then can they agree on a fail-over."""
        n = len(self.sentinel_ports)

        def watching() -> bool:
            for port in self.sentinel_ports:
                replicas = self._ask(port, "SENTINEL", "REPLICAS", self.SERVICE)
                others = self._ask(port, "SENTINEL", "SENTINELS", self.SERVICE)
                if not isinstance(replicas, list) or not isinstance(others, list):
                    return False
                if len(replicas) < 1 or len(others) < n - 1:
                    return False
            repl = self.replica.info("replication")
            return repl.get("master_link_status") == "up"

        until(watching, within, "the Sentinels to watch the primary and its replica", 0.05)

    def master_port(self) -> int | None:
        """The port the Sentinels name as the master now (the first that answers)."""
        for port in self.sentinel_ports:
            addr = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            if isinstance(addr, list) and len(addr) == 2:
                return int(addr[1])
        return None

    def kill_primary(self) -> None:
        """kill -9 of the primary's process."""
        self.primary.proc.kill()
        self.primary.proc.wait(10)

    def wait_failover(self, within: float = 30.0) -> None:
        """The Sentinels name the replica as master, and it takes writes."""

        def promoted() -> bool:
            if self.master_port() != self.replica.port:
                return False
            return self.replica.info("replication").get("role") == "master"

        until(promoted, within, "the Sentinels to promote the replica", interval=0.05)

    def stop(self) -> None:
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.replica.stop()
        self.primary.stop()
