"""Scraping a server's real /metrics endpoint over HTTP, as Prometheus would."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: str


def _get(url: str, method: str, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return Response(resp.status, resp.headers["Content-Type"], resp.read().decode())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, e.headers["Content-Type"], e.read().decode())


async def fetch(
    port: int, path: str = "/metrics", method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    """In a thread: the server under test answers on this test's event loop."""
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}", method, headers)


class Samples:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: dict[str, str] = {}  # family name -> type
        self._values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for s in family.samples:
                self._values[s.name, frozenset(s.labels.items())] = s.value

    @property
    def names(self) -> set[str]:
        """Every sample name (histograms give _bucket, _sum and _count)."""
        return {name for name, _ in self._values}

    def get(self, name: str, **labels: str) -> float | None:
        return self._values.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        v = self.get(name, **labels)
        if v is None:
            raise AssertionError(f"no sample {name}{labels} in the scrape:\n{self.text}")
        return v

    def samples(self) -> list[tuple[tuple[str, frozenset[tuple[str, str]]], float]]:
        """Every sample: ((name, labels), value)."""
        return list(self._values.items())

    def labels_of(self, name: str, label: str) -> set[str]:
        """Every value ``label`` takes on samples named ``name``."""
        return {v for n, lbls in self._values if n == name for k, v in lbls if k == label}


async def scrape(port: int) -> Samples:
    resp = await fetch(port)
    assert resp.status == 200, resp.body
    return Samples(resp.body)


SERVICE = "dispatchd.v1.DispatcherService"


def method_calls(m: Samples, method: str, code: str = "OK") -> float:
    """How many calls of a DispatcherService method ended with ``code`` (0 if none yet)."""
    return m.get("dispatchd_grpc_requests_total", service=SERVICE, method=method, code=code) or 0


async def submit_rpc_counts(metrics_port: int) -> tuple[float, float]:
    """(Submit, SubmitBatch) calls answered OK so far: how submits travelled."""
    m = await scrape(metrics_port)
    return method_calls(m, "Submit"), method_calls(m, "SubmitBatch")
