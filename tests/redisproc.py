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

    def __init__(self, workdir: Path, port: int = 0, persist: bool = False) -> None:
        """``port`` 0 picks a free one; another port starts a Redis where one stopped.
        ``persist`` keeps an append-only file (fsync'd every write) in ``workdir``, so a
        Redis started again on it has everything acknowledged before it stopped."""
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
