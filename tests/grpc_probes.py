"""The health and reflection check both backends' suites run against their server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def check_health_and_reflection(
    target: str, shut_down: Callable[[], Awaitable[None]]
) -> None:
    """Health says SERVING for the server and the service, reflection lists the service,
    and after ``shut_down`` (the start of a drain) health says NOT_SERVING."""
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "dispatchd.v1.DispatcherService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = set()
        async for r in refl.ServerReflectionInfo(ask()):
            services |= {s.name for s in r.list_services_response.service}
        assert "dispatchd.v1.DispatcherService" in services
        await shut_down()
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_is(target: str, status: int, service: str = "") -> bool:
    """Whether the server's health check answers ``status`` now (plaintext channel)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return bool(resp.status == status)
