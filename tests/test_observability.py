"""Alert rules and the Grafana dashboard speak about metrics ICM really exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from icm.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "icm.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
        if family.type == "histogram":
            names.update({f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"})
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(icm_[a-z_]+)", expr))


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_every_metric_referenced_exists():
    names = exported()
    for expr in dashboard_exprs() + rule_exprs():
        assert referenced(expr) <= names, (expr, referenced(expr) - names)


def test_no_phone_number_or_secret_label():
    labels = {
        label
        for family in Metrics().registry.collect()
        for s in family.samples
        for label in s.labels
    }
    assert labels <= {
        "version",
        "status",
        "source",
        "outcome",
        "reason",
        "entry",
        "kind",
        "result",
        "operation",
        "rule",  # a check's name from [rules] order: a closed set
        "le",
    }


@needs_promtool
def test_rules_are_valid_and_their_unit_tests_pass():
    subprocess.run([PROMTOOL, "check", "rules", str(RULES)], check=True, capture_output=True)
    subprocess.run(
        [PROMTOOL, "test", "rules", str(ROOT / "tests" / "prometheus" / "alerts_test.yml")],
        check=True,
        capture_output=True,
    )


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": expr.replace("$instance", ".*")}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
