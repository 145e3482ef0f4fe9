"""The Helm chart as the tests see it: the value sets they render, and helpers that render
them offline with Helm's own Go code (helm-python-sdk ships it as a shared library, so no helm
binary and no network are needed) and pick the objects apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "dispatchd"
KUBERNETES_VERSION = "1.35.0"
TOKEN = "tok-0123456789abcdef"

EVERYTHING_ON: dict[str, Any] = {
    "tls": {"enabled": True, "secretName": "dispatchd-tls", "clientCA": {"enabled": True}},
    "auth": {
        "enabled": True,
        "tokens": [
            {"role": "admin", "token": TOKEN, "name": "ops"},
            {"role": "work", "token": "work-0123456789abcdef"},
        ],
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "podDisruptionBudget": {"enabled": True},
    "persistence": {"storageClassName": "fast", "size": "5Gi"},
    "server": {
        "drainGrace": 40,
        "extraArgs": ["--log-level", "debug"],
        "httpAllowCidr": "10.0.0.0/8,fd00::/8",
        "maxBatchBytes": 8388608,
    },
    "terminationGracePeriodSeconds": 60,
    "podAnnotations": {"team": "jobs"},
    "imagePullSecrets": [{"name": "registry"}],
}
REDIS_URL = "rediss://:secret@redis.example:6380/0"
#: backend redis with the URL from the user's Secret (REDIS_URL stands in for its value).
REDIS_FROM_SECRET: dict[str, Any] = {
    "backend": "redis",
    "replicaCount": 3,
    "redis": {"existingSecret": "redis-conn", "secretKey": "url"},
}
#: backend redis with the chart's own Redis, and every optional part on.
REDIS_BUNDLED: dict[str, Any] = {
    **EVERYTHING_ON,
    "backend": "redis",
    "replicaCount": 3,
    "redis": {"bundled": {"enabled": True, "persistence": {"storageClassName": "fast"}}},
}
SECRETS = {("redis-conn", "url"): REDIS_URL}
EMBEDDED_SETS = {"defaults": {}, "everything on": EVERYTHING_ON}
REDIS_SETS = {"redis from a secret": REDIS_FROM_SECRET, "redis bundled": REDIS_BUNDLED}
VALUE_SETS = {**EMBEDDED_SETS, **REDIS_SETS}


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name="jobs", namespace="prod")


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name, text in sorted(render(values).items()):
        if name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert isinstance(doc, dict)
    return doc


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """dispatchd's StatefulSet (backend embedded) or Deployment (backend redis)."""
    (w,) = [
        d
        for d in docs
        if d["kind"] in ("StatefulSet", "Deployment") and d["metadata"]["name"] == "jobs-dispatchd"
    ]
    assert isinstance(w, dict)
    return w


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = workload(docs)["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod_spec(docs)["containers"]
    assert isinstance(c, dict)
    return c


def env_of(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the server sees it, Secret references resolved."""
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = SECRETS[ref["name"], ref["key"]]
    return env


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])
