"""The embedded backend (the default): the pure engine in this process, its dispatch
pump, the journal and the drain snapshot, behind the backend interface."""

from dispatchd.embedded.backend import EmbeddedBackend, worker_info
from dispatchd.embedded.storage import StorageConfig

__all__ = ["EmbeddedBackend", "StorageConfig", "worker_info"]
