"""The chart's PrometheusRule: off by default; on, it carries exactly the plain rules file
(helm/dispatchd/files/dispatchd-alerts.yaml) that promtool tests."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import yaml

from .chart import CHART, KUBERNETES_VERSION, manifests, only

RULES_ON: dict[str, Any] = {
    "metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}
}


def test_off_by_default() -> None:
    assert not [d for d in manifests({}) if d["kind"] == "PrometheusRule"]


def test_on_it_carries_the_plain_rules_file() -> None:
    rule = only(manifests(RULES_ON), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    plain = yaml.safe_load((CHART / "files" / "dispatchd-alerts.yaml").read_text())
    assert rule["spec"] == {"groups": plain["groups"]}
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "DispatchdQueueStuck",
        "DispatchdNoWorkers",
        "DispatchdDeadJobsGrowing",
        "DispatchdLeaseExpiriesSpiking",
        "DispatchdJournalCommitSlow",
        "DispatchdJournalUnavailable",
        "DispatchdRedisUnreachable",
        "DispatchdDrainTooLong",
    }


def test_lint_is_clean_with_the_rule_on() -> None:
    report = helm.lint(CHART, RULES_ON, strict=True, kube_version=KUBERNETES_VERSION)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
