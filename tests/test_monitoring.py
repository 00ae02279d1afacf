"""``wsdeploy grafana|prometheus`` and the metrics directory of ``wsdeploy daphne``.

The dashboard must load as JSON and query only wsops' metrics; the scrape config and
alert rules must pass promtool (Debian's ``prometheus`` package), and the alerts must
fire on the series they are about (``promtool test rules``).
"""

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.helpers import require_tool
from wsops import metrics


def wsdeploy(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("wsdeploy", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def series_names():
    """Every series name wsops exports (a histogram's _bucket/_sum/_count too)."""
    names = set()
    for name, (kind, _, _) in metrics.METRICS.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "instance"}


def metric_names(expr):
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[found.end():].lstrip()
        if not rest.startswith("(") and found.group() not in PROMQL_WORDS:
            names.add(found.group())
    return names


def test_the_dashboard_queries_only_wsops_metrics(tmp_path):
    out, _ = wsdeploy("grafana", "--domain", "chat.example.com", "--name", "chat")
    dashboard = json.loads(out)
    assert dashboard["title"] == "wsops (chat)" and dashboard["uid"] == "wsops-chat"
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in ("Handshakes by outcome", "Refused handshakes by reason", "Open sockets",
                   "Message refusals by code", "Redis latency (p50 / p99)",
                   "Redis up (per worker)"):
        assert wanted in titles
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    named = set().union(*(metric_names(q) for q in queries))
    assert named and named <= series_names(), named - series_names()
    assert series_names() - {"wsops_redis_seconds", "wsops_redis_seconds_sum",
                             "wsops_redis_seconds_count"} <= named  # every metric is shown
    legends = [target["legendFormat"] for panel in dashboard["panels"]
               for target in panel["targets"]]
    assert "{{reason}}" in legends  # Grafana's own {{ }} survive Django's renderer
    wsdeploy("grafana", "--domain", "chat.example.com", "--name", "chat", "--output",
             str(tmp_path))
    assert json.loads((tmp_path / "wsops-dashboard.json").read_text()) == dashboard


def test_metric_names_sees_through_promql():
    assert metric_names('sum by (le, operation) (rate(wsops_redis_seconds_bucket'
                        '{instance=~"$instance"}[5m]))') == {"wsops_redis_seconds_bucket"}
    assert metric_names("up == 0 and node_load1 > 2") == {"up", "node_load1"}


def rendered(tmp_path, *args):
    wsdeploy("prometheus", "--domain", "chat.example.com", "--output", str(tmp_path), *args)
    return tmp_path / "wsops-prometheus.yml", tmp_path / "wsops-alerts.yml"


def test_alert_rules_and_scrape_config_pass_promtool(tmp_path):
    promtool = require_tool("promtool", how="apt-get install prometheus")
    config, rules = rendered(tmp_path, "--max-sockets", "5000", "--metrics-path", "/live/metrics")
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert "metrics_path: /live/metrics" in text and '"chat.example.com:443"' in text
    assert "> 4500" in rules.read_text()  # 90% of --max-sockets



PROMTOOL_TESTS = Path(__file__).with_name("promtool-alerts-test.yml")


def test_alerts_fire_on_their_series(tmp_path):
    promtool = require_tool("promtool", how="apt-get install prometheus")
    rendered(tmp_path, "--max-sockets", "10000")
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS.read_text())
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_check_option_runs_promtool():
    require_tool("promtool", how="apt-get install prometheus")
    out, err = wsdeploy("prometheus", "--domain", "chat.example.com", "--check")
    assert "promtool check config: SUCCESS" in err and "# ==> wsops-alerts.yml <==" in out


def test_daphne_units_share_a_metrics_directory_cleaned_at_start():
    units, _ = wsdeploy("daphne", "--domain", "a.example.com", "--metrics-dir",
                        "/run/chat-metrics")
    service, _, directory = re.split(r"# ==> .* <==\n", units)[1:]
    assert "Environment=PROMETHEUS_MULTIPROC_DIR=/run/chat-metrics" in service
    assert "BindsTo=daphne-metrics.service" in service
    assert "After=network.target daphne-metrics.service" in service
    assert "ReadWritePaths=/run/chat-metrics" in service
    assert "RuntimeDirectory=chat-metrics" in directory and "PartOf=daphne.target" in directory
    assert "ExecStart=/usr/bin/find /run/chat-metrics -mindepth 1 -delete" in directory
    assert "Type=oneshot" in directory and "RemainAfterExit=yes" in directory


@pytest.mark.parametrize("args, option", [
    (["daphne", "--metrics-dir", "/var/lib/metrics"], "--metrics-dir"),
    (["daphne", "--metrics-dir", "/run/x\nExecStartPre=/bin/id"], "--metrics-dir"),
    (["prometheus", "--metrics-path", "/ws/metrics\n  - job_name: evil"], "--metrics-path"),
    (["prometheus", "--max-sockets", "0"], "--max-sockets"),
    (["grafana", "--name", 'x", "panels": []'], "--name"),
])
def test_bad_monitoring_values_exit_2(args, option):
    with pytest.raises(CommandError) as error:
        wsdeploy(*args, "--domain", "a.example.com")
    assert option in str(error.value) and error.value.returncode == 2
