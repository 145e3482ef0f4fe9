"""The observability package's errors: one root, so start-up can catch them all."""


class ObservabilityError(Exception):
    """Observability cannot start as configured; the message says what to change."""


class TracingConfigError(ObservabilityError):
    """An OTEL_* variable names something this server cannot do."""
