"""The Helm chart's backend redis: stateless dispatchd replicas in a Deployment with a
PodDisruptionBudget, and the Redis URL from the user's Secret or from the chart's own Redis.
Lint, kubernetes-validate and the server's own config parser run on these value sets too, in
test_helm_chart.py."""

from __future__ import annotations

import helm_python as helm
import pytest

from dispatchd.config import load

from .chart import (
    REDIS_BUNDLED,
    REDIS_FROM_SECRET,
    REDIS_SETS,
    VALUE_SETS,
    container,
    env_of,
    manifests,
    only,
    pod_spec,
    render,
    workload,
)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", list(REDIS_SETS))
def test_redis_mode_runs_replicas_with_no_state_of_their_own(values: str) -> None:
    docs = manifests(VALUE_SETS[values])
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    deployment = workload(docs)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 3
    # A new replica is ready before an old one drains: the Service never runs short.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    c = container(docs)
    assert env_of(c)["DISPATCHD_DATA_DIR"] == ""  # overrides the image's data dir
    assert "data" not in {m["name"] for m in c["volumeMounts"]}
    assert "data" not in {v["name"] for v in pod_spec(docs)["volumes"]}
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert all(d["metadata"]["name"] == "jobs-dispatchd-redis" for d in claims)  # Redis's own
    assert not [d for d in docs if d["metadata"]["name"] == "jobs-dispatchd-headless"]
    spread = pod_spec(docs)["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread[0]["whenUnsatisfiable"] == "ScheduleAnyway"  # a spread, never a blocker


@pytest.mark.parametrize("values", list(REDIS_SETS))
def test_a_pdb_lets_node_drains_take_one_replica_at_a_time(values: str) -> None:
    docs = manifests(VALUE_SETS[values])
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    pods = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pods)
    off = manifests({**REDIS_FROM_SECRET, "podDisruptionBudget": {"enabled": False}})
    assert not [d for d in off if d["kind"] == "PodDisruptionBudget"]


def test_the_redis_url_comes_from_the_existing_secret() -> None:
    c = container(manifests(REDIS_FROM_SECRET))
    (url,) = [e for e in c["env"] if e["name"] == "DISPATCHD_REDIS_URL"]
    assert url == {
        "name": "DISPATCHD_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "redis-conn", "key": "url"}},
    }
    assert load([], env=env_of(c)).data_dir is None


def test_the_bundled_redis_serves_only_dispatchd() -> None:
    docs = manifests(REDIS_BUNDLED)
    redis = only(docs, "Deployment", "jobs-dispatchd-redis")
    service = only(docs, "Service", "jobs-dispatchd-redis")
    redis_pods = redis["spec"]["template"]["metadata"]["labels"]
    dispatchd_pods = workload(docs)["spec"]["template"]["metadata"]["labels"]
    # The URL dispatchd gets names the bundled Redis's Service and port.
    url = env_of(container(docs))["DISPATCHD_REDIS_URL"]
    (port,) = service["spec"]["ports"]
    assert url == f"redis://jobs-dispatchd-redis:{port['port']}/0"
    assert _selects(service["spec"]["selector"], redis_pods)
    # Neither workload's Services or PDB pick up the other's pods.
    for doc in docs:
        if doc["kind"] == "Service" and doc is not service:
            assert not _selects(doc["spec"]["selector"], redis_pods)
    assert not _selects(service["spec"]["selector"], dispatchd_pods)
    pdb = only(docs, "PodDisruptionBudget")
    assert not _selects(pdb["spec"]["selector"]["matchLabels"], redis_pods)
    # No password: the NetworkPolicy admits dispatchd's pods only, on the Redis port.
    policy = only(docs, "NetworkPolicy")
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], redis_pods)
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert _selects(source["podSelector"]["matchLabels"], dispatchd_pods)
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    # Queue state is never evicted and survives a restart (AOF on the claim); one writer.
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"
    claim = only(docs, "PersistentVolumeClaim")
    (data,) = [v for v in redis["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert redis["spec"]["strategy"] == {"type": "Recreate"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_embedded_mode_stays_single_writer() -> None:
    with pytest.raises(helm.HelmValuesError, match="maximum: got 2, want 1"):
        render({"replicaCount": 2})
    assert workload(manifests({**REDIS_FROM_SECRET, "replicaCount": 12}))["spec"]["replicas"] == 12
