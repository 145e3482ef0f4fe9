"""dispatchd: a gRPC service for width- and rate-limited job dispatch."""

__version__ = "0.1.0"
