"""``python -m dispatchd`` as a subprocess, for the e2e and browser suites: its stderr is
collected on a thread (so the pipe never fills) and the gRPC port read from its log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

SERVING = re.compile(r"dispatchd serving on [^:]+:(\d+)")


class DispatchdProcess:
    """Started with the given command-line arguments; ``port`` is the bound gRPC port
    once the "serving on" line was logged."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd", *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._saw(line)
            if m := SERVING.search(line):
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()  # the process ended: _wait_started says so

    def _saw(self, line: str) -> None:
        """A subclass reads more from a log line here (before the serving line counts);
        the attributes it sets must exist before ``__init__`` starts the reader."""

    def _started(self) -> bool:
        """Whether the log showed all that a start must show."""
        return self.port != 0

    def _wait_started(self, timeout: float) -> None:
        if not self._ready.wait(timeout) or not self._started():
            raise AssertionError("dispatchd did not start:\n" + "".join(self.lines))
