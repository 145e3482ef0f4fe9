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


#: The most often a client may ping (keepalive) before the server calls it misbehaving.
MIN_CLIENT_PING_MS = 1000


class StartError(Exception):
    """The server cannot start (port taken, unreadable snapshot); the message says why."""


def grpc_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
    servicer: pb_grpc.DispatcherServiceServicer,
    health_servicer: HealthServicer,
    max_receive_bytes: int,
    keepalive_time: float = 20.0,
) -> grpc.aio.Server:
    """The main server, not yet bound. The interceptors run in the order given.

    ``max_receive_bytes`` (Config.max_message_bytes) bounds every message a caller sends,
    for every method alike (a grpc server has no per-method receive limit): grpc reads a
    message's length prefix and refuses a longer one with RESOURCE_EXHAUSTED before any
    interceptor, the auth check included, sees the call, and without buffering it.

    Keepalive: the server pings every connection that has been quiet for
    ``keepalive_time`` seconds and drops it when no answer comes within half that (at
    least 1 s), so a worker behind a connection that died without a FIN (a partition, a
    lost NAT entry) loses its stream and its jobs go back. Workers may ping as often as
    once a second (the shipped ones ping every 20 s): more often earns a GOAWAY."""
    ms = int(keepalive_time * 1000)
    server = grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.keepalive_time_ms", ms),
            ("grpc.keepalive_timeout_ms", max(1000, ms // 2)),
            # Without these a ping sent into a dead connection waits a minute for its
            # answer, and a quiet stream's pings stop after two.
            ("grpc.http2.ping_timeout_ms", max(1000, ms // 2)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_MS),
            ("grpc.http2.max_ping_strikes", 2),
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


async def mark_serving(health_servicer: HealthServicer, serving: bool = True) -> None:
    """Readiness on (or off), for the server as a whole and for the dispatcher service.
    Once a drain began (enter_graceful_shutdown) this changes nothing."""
    r = health_pb2.HealthCheckResponse
    status = r.SERVING if serving else r.NOT_SERVING
    await health_servicer.set("", status)
    await health_servicer.set(SERVICE_NAME, status)


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise StartError(f"cannot listen on {address}: {e}") from None
