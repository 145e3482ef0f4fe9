"""Fixtures every test directory may use: one real redis-server per session, and the
in-process dispatchd that integration tests talk to.

Every test that asks for a server (``server``, ``target``, ``client``, ``server_config``
or ``backend``) runs once per backend: embedded and Redis (a replica on the session's
real redis-server). A test of something only one backend has carries
``@pytest.mark.embedded_only`` (the journal, the snapshot file, the engine itself) or
``@pytest.mark.redis_only`` (several replicas), and runs on that backend alone. A test
marked ``@pytest.mark.on_cluster`` runs on a Redis Cluster too, as the conformance suite's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, Worker
from tests.inproc import base_config, serving
from tests.redisproc import RedisClusterProcess, RedisProcess

BACKENDS = ("embedded", "redis")
#: The conformance suite also runs on a 3-primary Redis Cluster (one per session).
CLUSTER = "redis-cluster"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    if any("backend" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return  # the test names its backends itself
    if metafunc.definition.get_closest_marker("embedded_only") is not None:
        backends: tuple[str, ...] = ("embedded",)
    elif metafunc.definition.get_closest_marker("redis_only") is not None:
        backends = ("redis",)
    else:
        backends = BACKENDS
    if "redis" in backends and _on_cluster(metafunc):
        backends = (*backends, CLUSTER)
    metafunc.parametrize("backend", backends)


def _on_cluster(metafunc: pytest.Metafunc) -> bool:
    """The conformance suite's tests run on the Cluster too, and those marked on_cluster."""
    if metafunc.definition.get_closest_marker("on_cluster") is not None:
        return True
    return "conformance" in metafunc.definition.path.parts


@pytest.fixture(scope="session")
def redis_cluster_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterProcess]:
    proc = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_process: RedisClusterProcess) -> str:
    """An empty Redis Cluster for each test."""
    redis_cluster_process.flush()
    return redis_cluster_process.url


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """An empty Redis for each test."""
    redis_process.flush()
    return redis_process.url


def config_for(backend: str, config: Config, request: pytest.FixtureRequest) -> Config:
    """``config`` served by ``backend`` (the Redis one on this session's redis-server)."""
    if backend in ("redis", CLUSTER):
        url = request.getfixturevalue("redis_url" if backend == "redis" else "redis_cluster_url")
        return replace(config, backend="redis", redis_url=url, data_dir=None)
    return config


@pytest.fixture
def server_config(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    return config_for(backend, base_config(tmp_path), request)


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[DispatchdServer]:
    async with serving(DispatchdServer(server_config)) as srv:
        yield srv


@pytest.fixture
def target(server: DispatchdServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as c:
        yield c


StartWorker = Callable[..., Worker]


@pytest.fixture
async def workers() -> AsyncIterator[Callable[..., Worker]]:
    """Starts Workers on a given target as tasks; cancels them afterwards."""
    running: list[asyncio.Task[None]] = []

    def start(target: str, *, configure: Callable[[Worker], None], **kw: object) -> Worker:
        worker = Worker(target, **kw)  # type: ignore[arg-type]
        configure(worker)
        running.append(asyncio.create_task(worker.run_async()))
        return worker

    yield start
    for task in running:
        if not task.done():
            task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


@pytest.fixture
def start_worker(target: str, workers: Callable[..., Worker]) -> StartWorker:
    """Starts Workers on this test's server as tasks; cancels them afterwards."""

    def start(*, configure: Callable[[Worker], None], **kw: object) -> Worker:
        return workers(target, configure=configure, **kw)

    return start
