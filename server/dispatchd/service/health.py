"""grpc.health.v1 with a liveness answer that a drain does not turn off.

The overall status ("" and the DispatcherService name) goes NOT_SERVING when a drain begins:
that is readiness, and it takes the pod out of its Service. A liveness probe must not fail
then, or the kubelet would kill a server that is busy finishing jobs; so the service name
``liveness`` answers SERVING for as long as the process answers at all.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

LIVENESS_SERVICE = "liveness"


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc, name-defined]  # public alias the stubs miss
    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS_SERVICE:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return response
