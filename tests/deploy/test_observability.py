"""The Grafana dashboard and the Prometheus alert rules: promtool accepts and unit-tests the
rules, every dashboard query is valid PromQL, and every metric either references is exported
by the real gateway, on the embedded broker and on Redis."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, gateway, http_get, redis_server

DASHBOARD = REPO / "deploy" / "grafana" / "fanout.json"
# Plain Prometheus loads deploy/prometheus/alerts.yml, a link to the chart's file (one source).
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK_BASE = "https://github.com/fanout-gateway/fanout/blob/main/docs/operations.md"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"

# Series Prometheus makes itself rather than scraping them.
SYNTHETIC = {"up"}
# Metrics the dashboard and the rules use that the gateway does not export yet (asked of the
# gateway: readiness as a gauge, recovery outcomes, presence members). The xfail test below
# turns red once they exist, so this list is emptied then.
AWAITED: set[str] = set()  # metrics the dashboards may use before the gateway exports them

# Stand-ins for Grafana's variables, so dashboard queries can be checked as plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "offset",
                "group_left", "group_right", "inf", "nan"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left once strings, label matchers,
    ranges and grouping clauses are removed, except function calls and keywords."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", e):
        if not m.group(2) and m.group(1) not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def referenced_metrics() -> set[str]:
    names = set()
    for expr in dashboard_exprs() + rule_exprs():
        names |= metric_names(expr)
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            names |= set(re.findall(r"label_values\((\w+)", variable["definition"]))
    return names


def exported_metrics(text: str) -> set[str]:
    """Series names of a /metrics page: each family of `# TYPE`, histograms and summaries
    with their _bucket/_sum/_count series."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind in ("histogram", "summary"):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_metric_name_extraction():
    expr = ('sum by (instance, le) (rate(fanout_publish_lag_seconds_bucket{job=~"a|b", x="y z"}[5m]))'
            ' / on(instance) group_left max(up) > bool 0.5 or vector(0)')
    assert metric_names(expr) == {"fanout_publish_lag_seconds_bucket", "up"}


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should():
    """promtool's unit tests: each alert fires on the series that should trip it, with its
    rendered summary, and not on healthy neighbours."""
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_runbook():
    alerts = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"FanoutNodeNotReady", "FanoutRedisDown", "FanoutDeliveriesDropping",
            "FanoutPublishLagHigh", "FanoutSlowConsumersSpiking", "FanoutMemoryHigh"} <= alerts.keys()
    runbook = (REPO / "docs" / "operations.md").read_text()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        # Absolute: Alertmanager and its receivers know nothing of this repository's layout.
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
        assert re.search(rf"^#+ {name}$", runbook, re.M), f"docs/operations.md has no section {name}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Every panel query, Grafana variables substituted, checked by promtool's parser (as
    recording rules)."""
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_what_operators_need():
    board = dashboard()
    panels = dashboard_panels()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    exprs = " ".join(dashboard_exprs())
    for metric in ("fanout_connections_open", "fanout_messages_delivered_total",
                   "fanout_publish_lag_seconds_bucket", "fanout_slow_consumers_total",
                   "fanout_redis_reconnects_total", "fanout_redis_dropped_total",
                   "fanout_messages_dropped_total", "fanout_recoveries_total",
                   "fanout_presence_members"):
        assert metric in exprs, f"no panel shows {metric}"


@pytest.fixture(scope="module")
def exported(fanout_bin, tmp_path_factory) -> dict[str, set[str]]:
    """The metric names of a fresh gateway on each broker, before any traffic."""
    tmp = tmp_path_factory.mktemp("metrics")
    pages = {}
    with gateway(fanout_bin, tmp) as base:
        status, pages["embedded"] = http_get(f"{base}/metrics")
        assert status == 200
    with redis_server(tmp) as port:
        with gateway(fanout_bin, tmp, "--redis-url", f"redis://127.0.0.1:{port}/0") as base:
            status, pages["redis"] = http_get(f"{base}/metrics")
            assert status == 200
    return {broker: exported_metrics(text) for broker, text in pages.items()}


def test_every_referenced_metric_is_exported(exported):
    available = exported["embedded"] | exported["redis"] | SYNTHETIC
    missing = referenced_metrics() - available - AWAITED
    assert not missing, f"referenced but not exported by a fresh gateway: {sorted(missing)}"
    # Nothing Redis-specific is missing from a Redis node, nothing else from an embedded one.
    for name in referenced_metrics() - SYNTHETIC - AWAITED:
        broker = "redis" if name.startswith("fanout_redis_") or name == "fanout_resyncs_total" else "embedded"
        assert name in exported[broker], f"{name} not exported on the {broker} broker"
