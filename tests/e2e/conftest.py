"""Runs dispatchd as a real subprocess and stops it by pid."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.dispatchd_process import DispatchdProcess
from tests.e2e.wheels import Built, build_both


class ServerProcess(DispatchdProcess):
    """A dispatchd process with the dashboard off."""

    def __init__(self, data_dir: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            [
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "info",
                "--metrics-listen",
                "127.0.0.1:0",
                "--http-listen",  # the dashboard off: never the default 8080 another run holds
                "0",
                *extra,
            ],
            env,
        )

    def wait_ready(self, timeout: float = 20.0) -> str:
        self._wait_started(timeout)
        return f"127.0.0.1:{self.port}"

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._close_pipe(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipe(10)

    def _close_pipe(self, timeout: float) -> None:
        self._reader.join(timeout)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def backend_flags(backend: str, request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The dispatchd flags of this test's backend (the Redis one on the session's
    redis-server, emptied for the test)."""
    if backend == "redis":
        return ("--backend", "redis", "--redis-url", request.getfixturevalue("redis_url"))
    return ()


@pytest.fixture
def start_server() -> Iterator[type[ServerProcess]]:
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(
            self, data_dir: Path, *extra: str, env: Mapping[str, str] | None = None
        ) -> None:
            super().__init__(data_dir, *extra, env=env)
            started.append(self)

    yield Tracked
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Both distributions of this tree, built once per test session."""
    return build_both(tmp_path_factory.mktemp("dist"))
