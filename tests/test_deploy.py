"""What deploy/ ships to operators: the alert rules (checked and unit-tested by
promtool), the compose file's wiring, and the Grafana dashboard and the rules evaluated
by a real Prometheus (Debian's, installed by `make test`) scraping a real gateway that
carried traffic: every query evaluates, the dashboard's return data, and every metric
they name is one the gateway serves and docs/metrics.md documents."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpfast.config import parse

from .conftest import ROOT, GatewayProcess, free_port, run, ws_client

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mcpfast.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
BACKGROUND = ROOT / "tests" / "servers" / "background_server.py"

# Dashboard queries that stay empty after the traffic below, and why.
EMPTY_WITHOUT_SUCH_EVENTS = {
    # No client is refused at admission: the gateway has no [auth].
    "sum by (reason) (rate(mcpfast_authentication_refused_total[1m]))",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed; `make test` installs Debian's prometheus")
    return path


def dashboard_queries() -> list[str]:
    """Every query of the dashboard, with Grafana's variables as a query would see them
    with every upstream chosen and a one-minute rate window."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m").replace("$upstream", ".*")
            for panel in panels for target in panel.get("targets", [])]


def rule_queries() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def named_metrics(query: str) -> set[str]:
    """The metric names a PromQL expression reads (histogram series by family)."""
    names = set(re.findall(r"\b((?:mcpfast|process)_[a-z_]+)", query))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", METRICS_DOC.read_text(), re.M))


def test_every_metric_the_gateway_serves_is_documented() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from mcpfast.gateway.gateway import Gateway
    from mcpfast.metrics import GatewayCollector

    registry = CollectorRegistry()
    registry.register(GatewayCollector(Gateway(parse('[upstreams.a]\ncommand = ["true"]\n'))))
    served = set(re.findall(r"^# TYPE (mcpfast_[a-z_]+) (\w+)",
                            generate_latest(registry).decode(), re.M))
    documented = set(re.findall(r"^\| `(mcpfast_[a-z_]+)` \| (\w+) \|", METRICS_DOC.read_text(),
                                re.M))
    assert served == documented


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in checked.stdout
    tested = subprocess.run([tool, "test", "rules", "alerts_test.yml"], capture_output=True,
                            text=True, timeout=60, cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_and_the_rules_name_only_documented_metrics() -> None:
    documented = documented_metrics()
    assert len(documented) >= 30
    for query in [*dashboard_queries(), *rule_queries().values()]:
        for name in named_metrics(query) - {"process_resident_memory_bytes",
                                            "process_cpu_seconds_total"}:
            assert name in documented, (name, query)


def test_the_compose_file_wires_what_it_names() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mcpfast", "prometheus", "grafana"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), volume
        if "image" in service and service is not services["mcpfast"]:
            assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", service["image"]), service["image"]
    # The gateway's config loads, and Prometheus scrapes the admin port it names.
    gateway = services["mcpfast"]
    mounted = dict(v.split(":")[1::-1] for v in gateway["volumes"])
    config_path = gateway["command"][gateway["command"].index("--config") + 1]
    config_file = DEPLOY / mounted[config_path]
    config = parse(config_file.read_text(), str(config_file),
                   {"MCPFAST_ADMIN_TOKEN": "0123456789abcdef0123"})
    assert config.admin.public_metrics
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"mcpfast:{config.admin.port}"]
    assert job["job_name"] == "mcpfast"  # the alert MCPFastDown selects up{job="mcpfast"}
    # Grafana loads the dashboard from where it is mounted, through the provisioned
    # data source the dashboard's variable picks.
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "mcpfast.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    grafana_mounts = dict(v.split(":")[1::-1] for v in services["grafana"]["volumes"])
    assert grafana_mounts[f"{dashboards_dir}/mcpfast.json"] == "./grafana/mcpfast.json"
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


# -- a live Prometheus against a live gateway ------------------------------------------
class Prometheus:
    """Debian's Prometheus on loopback, scraping one gateway every second and
    evaluating the alert rules every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        rules = workdir / "alerts.yml"
        shutil.copy(RULES, rules)
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "mcpfast",
                                "static_configs": [{"targets": [target]}]}]}))
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except OSError:
                pass  # not listening yet
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} within {timeout:g} s:\n"
                                     + Path(self.log.name).read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_and_gateway(tmp_path: Path) -> Iterator[tuple[Prometheus, GatewayProcess]]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed; `make test` installs Debian's prometheus")
    gateway = GatewayProcess(tmp_path / "gw", {"bg": {
        "command": ["python", str(BACKGROUND)], "era": "legacy"}}, {
        "rate_limits": {"rate": 0.001, "burst": 1, "tool": "big", "name": "one-big"},
        "authorization": {"default": "allow"}})
    # The TOML writer takes tables; the rule list is written as an array of tables.
    text = gateway.config_path.read_text().replace("[rate_limits]", "[[rate_limits]]")
    gateway.config_path.write_text(
        text + '[[authorization.rules]]\ndeny_tools = ["replies"]\n')
    data = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp_path))
    prometheus = None
    try:
        gateway.start()
        prometheus = Prometheus(data, f"127.0.0.1:{gateway.admin_port}")
        yield prometheus, gateway
    finally:
        if prometheus is not None:
            prometheus.stop()
        gateway.cleanup()


def test_the_dashboard_and_the_rules_evaluate_on_a_live_prometheus(
        prometheus_and_gateway: tuple[Prometheus, GatewayProcess]) -> None:
    prometheus, gateway = prometheus_and_gateway

    async def calls(client: Any) -> None:
        """A call of each kind: answered, rate-limited, failed, denied."""
        assert "result" in await client.call_tool("count")
        refused = await client.call_tool("big", {"size": 10})
        assert refused["error"]["code"] == -32029
        failed = await client.call_tool("fail")
        assert failed["error"]["code"] == -32603
        denied = await client.call_tool("replies")
        assert denied["error"]["code"] == -32602

    async def traffic() -> None:
        async with ws_client(gateway.ws_url) as client:
            await client.initialize()
            assert "result" in await client.call_tool("big", {"size": 10})
            await calls(client)
            # A series appears with the value it has at its first scrape: the calls
            # after it are the ones a rate sees.
            await asyncio.to_thread(
                prometheus.wait, "a scrape after the first calls",
                lambda: prometheus.query("mcpfast_tool_refused_total"))
            for _ in range(3):
                await calls(client)
            for _ in range(20):
                assert "result" in await client.call_tool("count")
            # Scraped with the session open, then after it closed (its bytes counted
            # either way), and long enough for every rate to have two samples.
            await asyncio.to_thread(
                prometheus.wait, "three scrapes of the open session",
                lambda: prometheus.query('count_over_time(mcpfast_open_connections'
                                         '{transport="websocket"}[1m]) > 3'))
    run(traffic())
    # Every series the traffic made, in at least two scrapes.
    prometheus.wait("the traffic's counters in two scrapes", lambda: prometheus.query(
        "count_over_time(mcpfast_tool_refused_total[1m]) >= 2"))

    served = {re.sub(r"_(bucket|sum|count|created)$", "", name)
              for name in prometheus.get("/api/v1/label/__name__/values")["data"]}
    for query in dashboard_queries():
        result = prometheus.query(query)
        if query in EMPTY_WITHOUT_SUCH_EVENTS:
            continue
        assert result, f"no data for the dashboard query {query}"
        for name in named_metrics(query):
            assert name in served, (name, query)
    assert {(r["metric"]["upstream"], r["metric"]["state"])
            for r in prometheus.query(
                'max by (upstream, state) (mcpfast_upstream_state{upstream=~".*"}) == 1')
            } == {("bg", "ready")}
    codes = {r["metric"]["code"] for r in prometheus.query(
        'sum by (code) (rate(mcpfast_upstream_errors_total{upstream=~".*"}[1m]))')}
    assert codes == {"-32603", "-32029", "-32602"}

    # The rules Prometheus loaded evaluate without error; the failure ratio the error
    # alert compares is there, between 0 and 1 (4 failed calls of 37, and the refusals
    # are left out).
    def evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} == set(rule_queries())
        for rule in rules:
            assert rule["health"] in ("ok", "unknown"), rule
        return all(rule["health"] == "ok" for rule in rules)
    prometheus.wait("the alert rules evaluated", evaluated)
    ratio_expr = rule_queries()["MCPFastUpstreamErrors"].rsplit(">", 1)[0]
    (ratio,) = prometheus.query(ratio_expr)
    assert ratio["metric"]["upstream"] == "bg"
    assert 0 < float(ratio["value"][1]) < 1
    firing = {alert["labels"]["alertname"]
              for alert in prometheus.get("/api/v1/alerts")["data"]["alerts"]}
    assert "MCPFastDown" not in firing and "MCPFastUpstreamDown" not in firing
