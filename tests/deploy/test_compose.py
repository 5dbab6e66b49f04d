"""deploy/compose.yaml hangs together: each service finds the others by the names and ports their configs use, every
mounted file exists, and rerankd is built from this repository's Dockerfile with a required API key. (The stack itself
needs the Redis, Prometheus and Grafana images from a registry; its rerankd image, Prometheus config, rules and
dashboard are each run for real elsewhere: deploy/test-image.sh, test_prometheus.py, test_dashboard.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.queries import DEPLOY

ROOT = DEPLOY.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to deploy/) of the bind mounts; named volumes left out."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = split_volume(volume)
        if source.startswith((".", "/", "$")):
            out[target] = source
    return out


def split_volume(volume: str) -> tuple[str, str]:
    """``SOURCE:TARGET[:MODE]``, where SOURCE may be ``${VAR:-default}``."""
    end = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
    source, rest = volume[:end], volume[end:].lstrip(":")
    return source, rest.split(":")[0]


def host_path(source: str) -> Path:
    if source.startswith("${"):  # ${VAR:-default}
        source = source.split(":-", 1)[1].rstrip("}")
    return (DEPLOY / source).resolve()


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"rerankd", "redis", "prometheus", "grafana"}


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in mounts(service).items():
            assert host_path(source).exists(), f"{name}: {source} (for {target}) does not exist"
    for volume in (split_volume(v)[0] for s in compose["services"].values() for v in s.get("volumes", [])):
        if not volume.startswith((".", "/", "$")):
            assert volume in compose["volumes"], volume


def test_rerankd_is_built_here_and_needs_a_key(compose: dict[str, Any]) -> None:
    service = compose["services"]["rerankd"]
    build = service["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert set(build["args"]) <= set(_dockerfile_args())
    assert service["environment"]["RERANKD_API_KEY"].startswith("${RERANKD_API_KEY:?")  # compose refuses without
    assert service["environment"]["RERANKD_CACHE"] == "redis://redis:6379/0"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in compose["services"]["redis"]


def _dockerfile_args() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1].split("=")[0] for line in lines if line.startswith("ARG ")]


def test_prometheus_scrapes_the_rerankd_service_and_loads_the_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "rerankd" and port == compose["services"]["rerankd"]["ports"][0].rsplit(":", 1)[1]
    prometheus = mounts(compose["services"]["prometheus"])
    assert host_path(prometheus["/etc/prometheus/prometheus.yml"]) == DEPLOY / "prometheus" / "prometheus.yml"
    (pattern,) = config["rule_files"]
    rules_dir = host_path(prometheus[str(Path(pattern).parent)])
    assert sorted(rules_dir.glob(Path(pattern).name)), f"no rules where {pattern} points"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = mounts(compose["services"]["grafana"])
    provisioning = host_path(grafana["/etc/grafana/provisioning"])
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "rerankd.yaml").read_text())["providers"]
    dashboards = host_path(grafana[provider["options"]["path"]])
    assert (dashboards / "rerankd.json").is_file()
