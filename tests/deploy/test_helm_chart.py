"""The Helm chart, rendered offline by Helm's own Go code (see ``chart``), linted, validated with
``kubernetes-validate --strict``, and checked against the server it deploys, in both backends
(tests/deploy/test_helm_redis.py has the redis mode's own objects)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from dispatchd.config import Config, load
from dispatchd.security import Role, parse_tokens

from .chart import (
    CHART,
    EMBEDDED_SETS,
    EVERYTHING_ON,
    KUBERNETES_VERSION,
    REDIS_BUNDLED,
    REDIS_FROM_SECRET,
    TOKEN,
    VALUE_SETS,
    container,
    env_of,
    manifests,
    only,
    pod_spec,
    port_of,
    render,
    workload,
)

# The parts of the Prometheus operator's ServiceMonitor CRD this chart relies on; the CRD's
# schema is not among kubernetes-validate's built-in ones.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(params=list(VALUE_SETS), scope="module")
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return manifests(VALUE_SETS[request.param])


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_lint_is_clean(values: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[values], strict=True, kube_version=KUBERNETES_VERSION)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_every_manifest_passes_kubernetes_validate_strict(values: str, tmp_path: Path) -> None:
    docs = manifests(VALUE_SETS[values])
    files = []
    for i, doc in enumerate(docs):
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        path = tmp_path / f"{i:02}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(str(path))
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(
        [str(bin_dir / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" passed for resource ") == len(files), run.stdout


def test_optional_parts_are_off_by_default_and_on_when_asked() -> None:
    default = {d["kind"] for d in manifests({})}
    assert default == {"StatefulSet", "Service", "ServiceAccount"}
    everything = {d["kind"] for d in manifests(EVERYTHING_ON)}
    assert everything == default | {"ServiceMonitor", "PodDisruptionBudget", "Secret"}
    redis = {d["kind"] for d in manifests(REDIS_FROM_SECRET)}
    assert redis == {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    bundled = {d["kind"] for d in manifests({**REDIS_FROM_SECRET, "redis": REDIS_BUNDLED["redis"]})}
    assert bundled == redis | {"PersistentVolumeClaim", "NetworkPolicy"}


@pytest.mark.parametrize("values", list(EMBEDDED_SETS))
def test_one_replica_with_a_pvc_at_the_data_dir(values: str) -> None:
    docs = manifests(VALUE_SETS[values])
    sts = only(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    c = container(docs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env_of(c)["DISPATCHD_DATA_DIR"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def _image_env() -> dict[str, str]:
    """The DISPATCHD_* defaults the Dockerfile's ENV lines bake into the image."""
    text = (Path(__file__).parents[2] / "Dockerfile").read_text()
    return dict(re.findall(r"\b(DISPATCHD_[A-Z_]+)=(\S+)", text))


IMAGE_ENV = _image_env()


def test_the_server_accepts_the_configuration(docs: list[dict[str, Any]]) -> None:
    """The container's DISPATCHD_* variables and args, read by the server's own parser."""
    c = container(docs)
    env = env_of(c)
    # The image's own ENV (Dockerfile) is what the pod's env overrides.
    config = load(c.get("args", []), env={**IMAGE_ENV, **env})
    assert isinstance(config, Config)
    if workload(docs)["kind"] == "StatefulSet":
        assert config.data_dir is not None
        assert config.backend == "embedded"
        assert "DISPATCHD_BACKEND" not in env
    else:  # the queues live in Redis: no data dir to keep
        assert config.data_dir is None
        assert config.backend == "redis"
        assert config.redis_url == env["DISPATCHD_REDIS_URL"]
        assert env["DISPATCHD_REDIS_URL"].startswith(("redis://", "rediss://"))


def test_bounds_and_the_http_allow_list_reach_the_server() -> None:
    defaults = load([], env={**IMAGE_ENV, **env_of(container(manifests({})))})
    assert (defaults.http_allow_cidr, defaults.max_batch_bytes) == ((), 16 << 20)
    c = container(manifests(EVERYTHING_ON))
    config = load(c.get("args", []), env={**IMAGE_ENV, **env_of(c)})
    assert (config.http_allow_cidr, config.max_batch_bytes) == (("10.0.0.0/8", "fd00::/8"), 8 << 20)


def test_ports_probes_and_services_agree_with_the_server(docs: list[dict[str, Any]]) -> None:
    c = container(docs)
    config = load(c.get("args", []), env=env_of(c))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == port_of(config.listen)
    assert config.health_listen is not None
    assert ports["health"] == port_of(config.health_listen)
    assert ports["metrics"] == port_of(env_of(c)["DISPATCHD_METRICS_LISTEN"])
    for probe, service in [
        ("startupProbe", "liveness"),
        ("readinessProbe", ""),
        ("livenessProbe", "liveness"),
    ]:
        assert c[probe]["grpc"] == {"port": ports["health"], "service": service}
    grpc_svc = only(docs, "Service", "jobs-dispatchd")
    (port,) = grpc_svc["spec"]["ports"]
    assert (port["appProtocol"], port["targetPort"]) == ("grpc", "grpc")
    metrics = only(docs, "Service", "jobs-dispatchd-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    for svc in (grpc_svc, metrics):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_grace_period_outlasts_the_pre_stop_sleep_and_the_drain(
    docs: list[dict[str, Any]],
) -> None:
    c = container(docs)
    config = load(c.get("args", []), env=env_of(c))
    pre_stop = c.get("lifecycle", {}).get("preStop")
    if workload(docs)["kind"] == "StatefulSet":
        assert pre_stop is None  # one replica: nowhere else for new calls to go meanwhile
        sleep = 0
    else:  # endpoints drop the pod while it still serves; then SIGTERM starts the drain
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = int(command[1])
        assert sleep > 0
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > sleep + config.drain_grace


def test_security_context(docs: list[dict[str, Any]]) -> None:
    pod = pod_spec(docs)
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001  # the image's fixed UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["fsGroup"] == 10001  # the PVC is writable by that UID
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", ["everything on", "redis bundled"])
def test_tls_and_tokens_reach_the_server(values: str) -> None:
    docs = manifests(VALUE_SETS[values])
    c = container(docs)
    config = load(c.get("args", []), env=env_of(c))
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    for path, key in [
        (config.tls_cert, "tls.crt"),
        (config.tls_key, "tls.key"),
        (config.tls_client_ca, "ca.crt"),
    ]:
        assert path is not None
        volume = volumes[mounts[str(path.parent)]]
        assert volume["secret"]["secretName"] == "dispatchd-tls"
        assert key in [item["key"] for item in volume["secret"]["items"]]
    assert config.auth_tokens is not None
    secret = only(docs, "Secret")
    volume = volumes[mounts[str(config.auth_tokens.parent)]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    # The file the chart writes is one the server reads.
    tokens = parse_tokens(secret["stringData"][config.auth_tokens.name])
    admin = tokens.identify(TOKEN)
    assert admin is not None
    assert (admin.name, admin.roles) == ("ops", frozenset({Role.ADMIN}))
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/tokens"]
    assert config.log_level == "debug"  # extraArgs win over the environment


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "one"}, "/replicaCount': got string, want integer"),
        ({"replicaCount": 2}, "maximum: got 2, want 1"),
        ({"server": {"drainGrace": "25s"}}, "/server/drainGrace': got string, want number"),
        ({"server": {"port": 70000}}, "/server/port"),
        ({"persistence": {"enabled": "yes"}}, "/persistence/enabled': got string"),
        ({"tls": {"enabled": True}}, "/tls/secretName"),
        ({"auth": {"tokens": [{"role": "root", "token": TOKEN}]}}, "/auth/tokens/0/role"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
        ({"replicas": 1}, "additional properties 'replicas' not allowed"),
        ({"backend": "postgres"}, "/backend"),
        ({"redis": {"bundled": {"port": "6379"}}}, "/redis/bundled/port': got string"),
        ({"podDisruptionBudget": {"maxUnavailable": "one"}}, "/podDisruptionBudget/maxUnavailable"),
    ],
)
def test_the_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message.replace("[", r"\[")):
        render(values)


def test_a_values_file_with_a_wrong_type_fails(tmp_path: Path) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text("server:\n  defaultWidth: ten\n")
    values = helm.values_from_yaml(bad.read_text())
    with pytest.raises(helm.HelmValuesError, match="defaultWidth"):
        render(values)
    report = helm.lint(CHART, values)
    assert any("defaultWidth" in e for e in report["errors"]), report


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"terminationGracePeriodSeconds": 20}, "must exceed server.drainGrace"),
        ({"auth": {"enabled": True}}, "auth.enabled needs auth.existingSecret"),
        ({"backend": "redis"}, "backend redis needs a Redis"),
        (
            {"backend": "redis", "redis": {"existingSecret": "r", "bundled": {"enabled": True}}},
            "redis.existingSecret or redis.bundled.enabled, not both",
        ),
        ({"redis": {"existingSecret": "r"}}, "only used with backend: redis"),
        ({**REDIS_FROM_SECRET, "terminationGracePeriodSeconds": 30}, "plus preStopSleepSeconds"),
        (
            {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
            "minAvailable or maxUnavailable, not both",
        ),
    ],
)
def test_inconsistent_values_do_not_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "pending_total"),
    [
        ({}, 209_715),  # 512Mi x 0.4 / 1024 bytes a job
        ({"resources": {"limits": {"memory": "2Gi"}}}, 838_860),
        ({"resources": {"limits": {"memory": "1G"}}}, 390_625),
        ({"resources": {"limits": {"memory": "1000000000"}}}, 390_625),
        (
            {"resources": {"limits": {"memory": "1Gi"}}, "server": {"pendingJobBytes": 2048}},
            209_715,
        ),
        ({"server": {"maxPendingTotal": 5000}}, 5000),
        ({"server": {"maxPendingTotal": 0}}, 0),
        ({"resources": {"limits": {"memory": None}}}, 0),  # no memory limit: nothing to derive
        (REDIS_FROM_SECRET, 0),  # Redis holds the jobs
    ],
)
def test_max_pending_total_follows_the_memory_limit(
    values: dict[str, Any], pending_total: int
) -> None:
    c = container(manifests(values))
    config = load(c.get("args", []), env={**IMAGE_ENV, **env_of(c)})
    assert (config.max_pending_total, config.max_queues) == (pending_total, 10_000)
