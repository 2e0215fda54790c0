"""The shipped dashboard, alert rules and example configs are valid for the real tools.

promtool and amtool check the files; a real Prometheus scraping a fake Gatekeeper
exporter runs every PromQL expression of the Grafana dashboard and the rules.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import PrometheusServer, require_binary

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
COUNTERS = {
    "gatekeeper_decisions_total", "gatekeeper_tool_calls_total", "gatekeeper_sessions_total",
    "gatekeeper_spend_dollars_total", "gatekeeper_gate_evaluations_total",
}
GAUGES = {"gatekeeper_rollout_info", "gatekeeper_rollout_traffic_percent", "gatekeeper_kill_switch_open"}
HISTOGRAMS = {"gatekeeper_tool_call_latency_seconds", "gatekeeper_decision_duration_seconds"}
SPEC_METRICS = COUNTERS | GAUGES | HISTOGRAMS
# The MCP gateway's own metrics (issue 14), on `gatekeeper gateway`'s /metrics.
GATEWAY_METRICS = {"gatekeeper_gateway_calls_total", "gatekeeper_gateway_upstream_errors_total",
                   "gatekeeper_gateway_upstream_latency_seconds_bucket", "gatekeeper_gateway_rehearsed_faults_total"}
ALLOWED_NAMES = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")} \
    | GATEWAY_METRICS
GRAFANA_VARIABLES = {"agent": "support-bot", "__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def run_tool(*command: str, cwd: Path = DASHBOARDS) -> str:
    """Run a checker binary and return its output; fail the test on a non-zero exit."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def grafana_expressions() -> list[str]:
    """Return every PromQL expression of the dashboard with Grafana variables filled in."""
    dashboard = json.loads((DASHBOARDS / "gatekeeper-grafana.json").read_text())
    found = [value for key, value in walk(dashboard) if key == "expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(label_values_to_promql(variable["query"]["query"]))
    return [fill_variables(expr) for expr in found]


def panel_expressions() -> list[str]:
    """Return the expressions behind panels and variables (not annotations), filled in."""
    dashboard = json.loads((DASHBOARDS / "gatekeeper-grafana.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return [fill_variables(expr) for expr in exprs]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Yield every (key, value) pair of a JSON document, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def label_values_to_promql(query: str) -> str:
    """Turn Grafana's ``label_values(selector, label)`` into the PromQL selector it reads."""
    match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query)
    assert match, f"unexpected variable query {query!r}"
    return match.group(1)


def fill_variables(expr: str) -> str:
    """Replace $var and ${var} with concrete values, longest names first."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", GRAFANA_VARIABLES[name]).replace(f"${name}", GRAFANA_VARIABLES[name])
    assert "$agent" not in expr and "$__" not in expr, f"unfilled variable in {expr!r}"
    return expr


def rules() -> list[dict[str, Any]]:
    """Return every rule of prometheus-rules.yml."""
    groups = yaml.safe_load((DASHBOARDS / "prometheus-rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression reads (strings, matchers, ranges and groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*+)(?!\s*\()", expr)
    return {name for name in names if name not in PROMQL_KEYWORDS}


# A fake Gatekeeper: one canary rollout whose candidate is worse than stable on every
# count, so each alert rule has something to find. Counters grow with every scrape.
def exposition(scrape: int) -> str:
    """Render the SPEC §6 metrics as they stand after ``scrape`` scrapes."""
    agent = 'agent="support-bot"'
    arms = {"candidate": 'version="v8",arm="candidate"', "stable": 'version="v7",arm="stable"'}
    lines = [f"gatekeeper_rollout_info{{{agent},candidate=\"v8\",stable=\"v7\",stage=\"canary\"}} 1",
             f"gatekeeper_rollout_traffic_percent{{{agent}}} 5", f"gatekeeper_kill_switch_open{{{agent}}} 1"]
    for result, per_scrape in (("pass", 2), ("fail", 1)):
        lines.append(f'gatekeeper_gate_evaluations_total{{{agent},result="{result}"}} {per_scrape * scrape}')
    for arm, (errors, slow, spend) in {"candidate": (20, True, 3.0), "stable": (1, False, 1.0)}.items():
        labels = f"{agent},{arms[arm]}"
        lines += arm_lines(labels, scrape, errors=errors, slow=slow, spend=spend)
    lines += histogram("gatekeeper_decision_duration_seconds", "", {"0.0005": 1.0, "0.001": 1.0}, 50 * scrape)
    lines += gateway_lines(scrape)
    return "\n".join(lines) + "\n"


def gateway_lines(scrape: int) -> list[str]:
    """Render the MCP gateway's metrics: 10 calls per scrape, one of them an upstream error; one rehearsed fault."""
    upstream = 'upstream="support-bot/live"'
    rehearsed = 'agent="support-bot",tool_class="irreversible",fault="timeout"'
    return [f'gatekeeper_gateway_calls_total{{agent="support-bot",environment="live",verdict="allow"}} {9 * scrape}',
            f"gatekeeper_gateway_rehearsed_faults_total{{{rehearsed}}} {scrape}",
            f'gatekeeper_gateway_calls_total{{agent="support-bot",environment="live",verdict="deny"}} {scrape}',
            f'gatekeeper_gateway_upstream_errors_total{{{upstream},kind="tool_error"}} {scrape}',
            *histogram("gatekeeper_gateway_upstream_latency_seconds", upstream, {"0.01": 0.5, "0.1": 1.0},
                       9 * scrape)]


def arm_lines(labels: str, scrape: int, *, errors: int, slow: bool, spend: float) -> list[str]:
    """Render one arm's counters: 100 calls and 5 sessions per scrape."""
    stage = f'{labels},stage="canary"'
    return [
        f'gatekeeper_decisions_total{{{stage},verdict="allow",reason="allowed"}} {95 * scrape}',
        f'gatekeeper_decisions_total{{{stage},verdict="deny",reason="cap_exceeded"}} {5 * scrape}',
        f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="ok"}} {(100 - errors) * scrape}',
        f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="error"}} {errors * scrape}',
        f"gatekeeper_sessions_total{{{labels}}} {5 * scrape}",
        f"gatekeeper_spend_dollars_total{{{labels}}} {spend * scrape}",
        *histogram("gatekeeper_tool_call_latency_seconds", labels,
                   {"0.1": 0.0 if slow else 1.0, "2.5": 0.0 if slow else 1.0, "5": 1.0}, 100 * scrape),
    ]


def histogram(name: str, labels: str, shares: dict[str, float], count: int) -> list[str]:
    """Render a cumulative histogram with ``shares`` of ``count`` at or under each bound."""
    sep = "," if labels else ""
    lines = [f'{name}_bucket{{{labels}{sep}le="{le}"}} {share * count}' for le, share in shares.items()]
    return [*lines, f'{name}_bucket{{{labels}{sep}le="+Inf"}} {count}', f"{name}_sum{{{labels}}} {count * 0.5}",
            f"{name}_count{{{labels}}} {count}"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Yield a real Prometheus that has scraped the fake Gatekeeper a few times and loaded the rules."""
    def respond(request: RecordedRequest) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4", exposition(len(exporter.requests)).encode()

    with LoopbackHTTPServer(respond) as exporter, PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), scrape_targets=[exporter.target],
        rule_files=[DASHBOARDS / "prometheus-rules.yml"],
    ) as server:
        wait_until(lambda: server.query("count_over_time(gatekeeper_rollout_info[1m]) >= 4"), "4 scrapes")
        wait_until(lambda: all(r["health"] == "ok" for r in loaded_rules(server)), "every rule evaluated")
        yield server


def wait_until(probe: Any, what: str, *, timeout: float = 30.0) -> None:
    """Poll ``probe`` every 0.2 s until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def loaded_rules(server: PrometheusServer) -> list[dict[str, Any]]:
    """Return the rules Prometheus loaded, with their health and last error."""
    groups = requests.get(f"{server.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def query_status(server: PrometheusServer, expr: str) -> dict[str, Any]:
    """Run an instant query and return the raw API answer, errors included."""
    return dict(requests.get(f"{server.url}/api/v1/query", params={"query": expr}, timeout=10).json())


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 4 rules found" in run_tool(require_binary("promtool"), "check", "rules",
                                                "prometheus-rules.yml")


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in run_tool(require_binary("promtool"), "test", "rules", "prometheus-rules.test.yml")


def test_every_rule_has_promtool_tests() -> None:
    tests = yaml.safe_load((DASHBOARDS / "prometheus-rules.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in rules()}


def test_promtool_accepts_the_example_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["localhost:8000"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["localhost:9093"]
    config["rule_files"] = [str(DASHBOARDS / name) for name in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    output = run_tool(require_binary("promtool"), "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output


def test_amtool_accepts_the_example_alertmanager_config() -> None:
    output = run_tool(require_binary("amtool"), "check-config", "alertmanager.yml")
    assert "SUCCESS" in output
    config = yaml.safe_load((DASHBOARDS / "alertmanager.yml").read_text())
    route = config["route"]["routes"][0]
    assert route["matchers"] == ['agent =~ ".+"'] and config["route"]["group_by"] == ["alertname", "agent"]
    webhook = next(r for r in config["receivers"] if r["name"] == route["receiver"])["webhook_configs"][0]
    assert webhook["url"] == "http://localhost:8000/v1/alerts" and webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer", "credentials_file": "/etc/alertmanager/gatekeeper-token"}


def test_every_rule_carries_agent_and_severity_labels() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert "by (agent" in rule["expr"], f"{rule['alert']} must keep the agent label"
        assert 60 <= duration_seconds(rule["for"]) <= 120, rule["alert"]


def duration_seconds(text: str) -> int:
    """Parse a Prometheus duration such as ``1m`` or ``90s``."""
    match = re.fullmatch(r"(\d+)([smh])", text)
    assert match, f"unexpected duration {text!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def test_grafana_dashboard_has_agent_and_datasource_variables() -> None:
    dashboard = json.loads((DASHBOARDS / "gatekeeper-grafana.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["agent"]["query"]["query"] == "label_values(gatekeeper_rollout_info, agent)"
    assert 36 <= dashboard["schemaVersion"] <= 39
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in panels)
    assert any(p.get("repeat") == "agent" for p in dashboard["panels"]), "one row per agent"


def test_dashboard_and_rules_read_only_spec_metrics() -> None:
    exprs = grafana_expressions() + [rule["expr"] for rule in rules()]
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used <= ALLOWED_NAMES, f"not SPEC §6 metric names: {sorted(used - ALLOWED_NAMES)}"
    raw = set(re.findall(r"gatekeeper_\w+", " ".join(exprs)))
    assert raw <= ALLOWED_NAMES, f"not SPEC §6 metric names: {sorted(raw - ALLOWED_NAMES)}"
    covered = {re.sub(r"_(bucket|sum|count)$", "", name) if name not in COUNTERS else name for name in used}
    assert covered >= SPEC_METRICS, f"the dashboard or rules never show {sorted(SPEC_METRICS - covered)}"


def test_metric_names_parser_sees_through_promql_syntax() -> None:
    expr = ('topk by (agent) (1, max by (agent, version) (label_replace(gatekeeper_rollout_info{a="b"}, '
            '"version", "$1", "candidate", "(.+)"))) * on (agent) group_left (version) up offset 5m > 1e3 or nan')
    assert metric_names(expr) == {"gatekeeper_rollout_info", "up"}


def test_prometheus_accepts_every_dashboard_expression(prometheus: PrometheusServer) -> None:
    for expr in grafana_expressions():
        answer = query_status(prometheus, expr)
        assert answer["status"] == "success", f"{expr}\n{answer}"


def test_every_dashboard_panel_shows_data_from_gatekeeper_metrics(prometheus: PrometheusServer) -> None:
    # Every fake metric is non-zero, so a panel showing only 0, NaN or nothing reads the wrong series.
    blank = [expr for expr in panel_expressions() if not any(positive(s) for s in prometheus.query(expr))]
    assert not blank, "panels without a positive value:\n" + "\n".join(blank)


def positive(series: dict[str, Any]) -> bool:
    """Whether an instant-vector sample is a finite number above zero."""
    value = float(series["value"][1])
    return math.isfinite(value) and value > 0


def test_prometheus_accepts_and_evaluates_every_rule(prometheus: PrometheusServer) -> None:
    for rule in rules():
        assert query_status(prometheus, rule["expr"])["status"] == "success", rule["alert"]
    loaded = loaded_rules(prometheus)
    assert {r["name"] for r in loaded} == {rule["alert"] for rule in rules()}
    assert all(r["health"] == "ok" and not r.get("lastError") for r in loaded), loaded


def test_every_rule_finds_the_worse_candidate_with_agent_and_version(prometheus: PrometheusServer) -> None:
    for rule in rules():
        found = prometheus.query(rule["expr"])
        labels = [series["metric"] for series in found]
        assert labels == [{"agent": "support-bot", "version": "v8"}], f"{rule['alert']}: {labels}"
