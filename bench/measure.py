"""What one run of a phase measured, and the small statistics the report needs."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.procs import machine_busy_seconds

CPUS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Measured:
    """One run: jobs (or baseline messages) finished, wall seconds, CPU of both sides."""

    jobs: int
    seconds: float
    server_cpu_s: float
    server_sys_s: float
    """The kernel's part of server_cpu_s (system calls: socket I/O, wake-ups)."""
    client_cpu_s: float
    other_cpu_s: float
    """CPU the rest of the machine used meanwhile: contention that skews wall-clock figures."""
    delivery_msgs: int = 0
    """WorkResponse messages that carried deliveries (0 for the baseline)."""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def server_cpu_us_per_job(self) -> float:
        return self.server_cpu_s / self.jobs * 1e6

    @property
    def server_sys_pct(self) -> float:
        return self.server_sys_s / self.server_cpu_s * 100 if self.server_cpu_s else 0.0

    @property
    def client_cpu_us_per_job(self) -> float:
        return self.client_cpu_s / self.jobs * 1e6

    @property
    def other_cpu_pct(self) -> float:
        """Other processes' CPU as a share of the machine's capacity over the run."""
        return self.other_cpu_s / (self.seconds * CPUS) * 100

    @property
    def jobs_per_delivery_msg(self) -> float:
        return self.jobs / self.delivery_msgs if self.delivery_msgs else 0.0


class Meter:
    """Snapshots wall clock, the server's CPU (/proc), this process's CPU and the whole
    machine's busy time at start."""

    def __init__(self, server_times: Callable[[], tuple[float, float]]) -> None:
        self._server_times = server_times
        self._wall = time.perf_counter()
        self._server0 = server_times()
        self._client0 = time.process_time()
        self._machine0 = machine_busy_seconds()

    def result(self, jobs: int, end_wall: float, delivery_msgs: int = 0) -> Measured:
        """``end_wall`` is when the last job was acked; CPU is read now, which may be a
        little later (after the server has applied the last acks)."""
        (user1, sys1), (user0, sys0) = self._server_times(), self._server0
        user, sys = user1 - user0, sys1 - sys0
        client = time.process_time() - self._client0
        machine = machine_busy_seconds() - self._machine0
        return Measured(
            jobs=jobs,
            seconds=end_wall - self._wall,
            server_cpu_s=user + sys,
            server_sys_s=sys,
            client_cpu_s=client,
            other_cpu_s=max(0.0, machine - user - sys - client),
            delivery_msgs=delivery_msgs,
        )


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in 0..100)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when every value is equal, 1/n
    when one takes everything."""
    squares = sum(x * x for x in values)
    if not squares:
        raise ValueError("no shares")
    return sum(values) ** 2 / (len(values) * squares)
