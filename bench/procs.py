"""Child server processes: start on a free port, read their CPU time, stop them by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port the kernel just handed out; the child binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds of every thread of ``pid`` so far, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields after "(comm)" start at field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or iowait) so far."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # user nice system idle iowait irq softirq steal: steal (the hypervisor ran someone else)
    # counts as busy, since it is contention too. guest time is already inside user.
    busy = sum(ticks[:8]) - idle
    return busy / CLK_TCK


@dataclass
class ServerProcess:
    """One server child: its pid, gRPC target and a log file holding its stderr."""

    name: str
    target: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes] = field(repr=False)
    metrics: str = ""
    """host:port of its metrics endpoint ("" when it has none): the turnaround probe's."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pid)

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")

    def log_tail(self, limit: int = 2000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (dispatchd drains and exits 0), then SIGKILL if it hangs on."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    return self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            return self.proc.wait(timeout)
        finally:
            self.log.close()


def start(name: str, argv: list[str], port: int) -> ServerProcess:
    log = tempfile.TemporaryFile(prefix=f"bench-{name}-")  # noqa: SIM115  # the server owns it
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return ServerProcess(name=name, target=f"127.0.0.1:{port}", proc=proc, log=log)


def start_dispatchd(
    port: int,
    metrics_listen: str | None = None,
    data_dir: Path | None = None,
    log_level: str = "warning",
    extra: Sequence[str] = (),
) -> ServerProcess:
    """The real server, as `make run` would start it, minus the snapshot directory unless
    ``data_dir`` is given (then with its default durability there: the SQLite journal).
    Metrics are on, as by default, on a free port unless ``metrics_listen`` says otherwise."""
    exe = Path(sys.executable).with_name("dispatchd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dispatchd"]
    metrics = metrics_listen or f"127.0.0.1:{free_port()}"
    args = ["--listen", f"127.0.0.1:{port}", "--log-level", log_level, "--drain-grace", "2"]
    args += ["--metrics-listen", metrics, "--http-listen", "0"]  # no dashboard port clash
    args += ["--http-allow-cidr", "127.0.0.0/8"]  # the HTTP push phase's endpoint is local
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    args += list(extra)
    name = "dispatchd" if data_dir is None else "dispatchd-journal"
    return replace(start(name, cmd + args, port), metrics=metrics)


def start_baseline(port: int) -> ServerProcess:
    script = Path(__file__).with_name("baseline.py")
    return start("baseline", [sys.executable, str(script), "--port", str(port)], port)


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes, from /proc/<pid>/status."""
    found = {"VmRSS:": 0, "VmHWM:": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        parts = line.split()  # "VmRSS:\t  123456 kB"
        if parts and parts[0] in found:
            found[parts[0]] = int(parts[1]) * 1024
    return found["VmRSS:"], found["VmHWM:"]


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (ext4, tmpfs, ...), from /proc/mounts:
    fsync on tmpfs costs nothing, so durable figures there mean little."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def stop_all(servers: list[ServerProcess]) -> None:
    """Stops every server, newest first; one that fails to stop does not spare the rest."""
    for server in reversed(servers):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            server.stop()
