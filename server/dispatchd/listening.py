"""The gRPC listeners both backends start alike: the main server (interceptors, message
caps, the dispatcher, health and reflection services) and the plaintext health port."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dispatchd.service.health import HealthServicer
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

log = logging.getLogger("dispatchd")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DispatcherService"].full_name
#: What the server sends is its own making (job deliveries, answers): a generous cap.
MAX_SEND_BYTES = 256 << 20


class StartError(Exception):
    """The server cannot start (port taken, unreadable snapshot); the message says why."""


def grpc_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
    servicer: pb_grpc.DispatcherServiceServicer,
    health_servicer: HealthServicer,
    max_receive_bytes: int,
) -> grpc.aio.Server:
    """The main server, not yet bound. The interceptors run in the order given.

    ``max_receive_bytes`` (Config.max_message_bytes) bounds every message a caller sends,
    for every method alike (a grpc server has no per-method receive limit): grpc reads a
    message's length prefix and refuses a longer one with RESOURCE_EXHAUSTED before any
    interceptor, the auth check included, sees the call, and without buffering it."""
    server = grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ],
    )
    pb_grpc.add_DispatcherServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


async def serve_health(
    server: grpc.aio.Server, health_servicer: HealthServicer, address: str
) -> int:
    """Starts ``server`` as a plaintext, health-only port (--health-listen) for probes
    that hold no token or client certificate; returns the bound port."""
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = bind(server, address, None)
    await server.start()
    log.info("health probes (plaintext) on %s:%d", address.rpartition(":")[0], port)
    return port


async def mark_serving(health_servicer: HealthServicer) -> None:
    """Readiness on, for the server as a whole and for the dispatcher service."""
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    await health_servicer.set(SERVICE_NAME, serving)


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise StartError(f"cannot listen on {address}: {e}") from None
