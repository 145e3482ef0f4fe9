"""Metrics, traces and logs: observers of engine events and a gRPC interceptor, kept out
of the engine (which imports neither prometheus nor opentelemetry)."""

from dispatchd.observability.errors import ObservabilityError, TracingConfigError
from dispatchd.observability.setup import Observability
from dispatchd.observability.tracing import provider_from_env

__all__ = ["Observability", "ObservabilityError", "TracingConfigError", "provider_from_env"]
