"""docker-compose.yml must offer what the local provisioning does: same ports, same topics."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from octollm.settings import PROJECT_ROOT, Settings
from octollm.topics import topic_specs

pytestmark = pytest.mark.unit

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def _published(service: str) -> set[int]:
    ports = COMPOSE["services"][service].get("ports", [])
    return {int(p.split(":")[-2]) for p in ports}


def test_compose_parses_and_has_every_service() -> None:
    assert {"kafka", "kafka-topics", "clickhouse", "qdrant"} <= set(COMPOSE["services"])


def test_kafka_port_matches_local_default() -> None:
    settings = Settings()
    assert settings.kafka_port in _published("kafka")
    assert f"127.0.0.1:{settings.kafka_port}" in settings.bootstrap_servers
    env = COMPOSE["services"]["kafka"]["environment"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{settings.kafka_port}"
    assert env["KAFKA_NUM_PARTITIONS"] == str(settings.partitions)


def test_topics_match_local_provisioning() -> None:
    script = COMPOSE["services"]["kafka-topics"]["command"][0]
    names = set(re.findall(r"\bocto\.[a-z0-9_.]+", script))
    assert names == {spec.name for spec in topic_specs(Settings(topic_prefix=""))}
    assert f"--partitions {Settings().partitions}" in script


def test_every_port_binds_loopback_only() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# --- Prometheus and Grafana (docs/operations.md) -------------------------------------------------

INFRA = PROJECT_ROOT / "infra"


def _defined_metric_names() -> set[str]:
    """Every metric name our code defines: prometheus-client calls in streams/ and arms/
    (including collectors' families) and the reflex layer's `format!("{p}…")` names."""
    names: set[str] = set()
    for path in [*(PROJECT_ROOT / "streams").rglob("*.py"), *(PROJECT_ROOT / "arms").rglob("*.py")]:
        text = path.read_text()
        names |= set(
            re.findall(
                r'(?:Counter|Gauge|Histogram|Summary|MetricFamily)\(\s*"([a-z_][a-z0-9_]*)"', text
            )
        )
    rust = (PROJECT_ROOT / "reflex-layer" / "src" / "metrics.rs").read_text()
    prefix = re.search(r'let p = "([a-z_]+)";', rust)
    assert prefix, "reflex metrics prefix not found"
    names |= {prefix.group(1) + n for n in re.findall(r'format!\("\{p\}([a-z0-9_]+)"', rust)}
    return names


def _base_name(series: str) -> str:
    # what a client library appends to a defined name when it exposes it
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_prometheus_and_grafana_services_are_pinned_and_loopback_only() -> None:
    services = COMPOSE["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image
        # host networking (the components' /metrics are on the host's loopback), so no
        # published ports: each must listen on 127.0.0.1 by its own settings
        assert service["network_mode"] == "host" and "ports" not in service
    assert "--web.listen-address=127.0.0.1:9090" in prometheus["command"]
    assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    mounts = " ".join(prometheus["volumes"] + grafana["volumes"])
    for path in ("prometheus/prometheus.yml", "grafana/provisioning", "grafana/dashboards"):
        assert f"./infra/{path}:" in mounts
        assert (INFRA / path).exists()
    assert "/run/prometheus:/etc/prometheus/targets" in mounts


def test_prometheus_scrapes_reflex_audit_and_workers() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    settings = Settings()
    assert jobs["reflex"]["static_configs"][0]["targets"] == [settings.reflex_metrics_addr]
    assert jobs["audit"]["static_configs"][0]["targets"] == [f"127.0.0.1:{settings.audit_port}"]
    assert jobs["workers"]["file_sd_configs"][0]["files"] == ["/etc/prometheus/targets/*.json"]


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "octollm.yml").read_text())
    [provider] = providers["providers"]
    mount = next(v for v in COMPOSE["services"]["grafana"]["volumes"] if "dashboards:" in v)
    assert mount.split(":")[1] == provider["options"]["path"]
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "octollm.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


def test_every_dashboard_panel_queries_metrics_the_code_defines() -> None:
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "octollm.json").read_text())
    defined = _defined_metric_names()
    assert {"octollm_arm_requests_total", "octo_reflex_records_total"} <= defined
    titles = [p["title"].lower() for p in dashboard["panels"]]
    for topic in ("throughput", "status", "arm latency", "reflex decisions", "consumer lag"):
        assert any(topic in t for t in titles), topic
    assert any("audit lag" in t for t in titles) and any("dead letters" in t for t in titles)
    promql_words = {"sum", "rate", "histogram_quantile", "max"}
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # label lists (`by (arm, le)`) are not series; what is left before [ { ) is
            expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", target["expr"])
            series = {
                w
                for w in re.findall(r"\b[a-z_][a-z0-9_]*\b(?=\s*[\[{)])", expr)
                if w not in promql_words
            }
            assert series, target["expr"]
            for name in series:
                assert name in defined or _base_name(name) in defined, (panel["title"], name)
