"""deploy/ray: the `serve run` config builds rerankd applications as written, and the KubeRay RayService manifest
embeds that same config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rerankd.distributed.serve import ServeScaling, app_builder
from rerankd.errors import InvalidInput
from rerankd.settings import Settings

pytestmark = pytest.mark.ray
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "ray"


def test_rayservice_embeds_the_serve_config() -> None:
    manifest = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((DEPLOY / "serve-config.yaml").read_text())
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert workers["maxReplicas"] == 16  # the 16-GPU cluster of docs/scaling.md


def test_serve_config_applications_build_with_their_scaling() -> None:
    config = yaml.safe_load((DEPLOY / "serve-config.yaml").read_text())
    for application in config["applications"]:
        assert application["import_path"] == "rerankd.distributed.serve:app_builder"
        args = application["args"]
        router = app_builder(args)._bound_deployment  # what `serve run` deploys: the ingress, bound to the scorers
        assert router.name == "rerankd-router" and router.ray_actor_options == {"num_cpus": 0}
        deployment = router.init_args[0]._bound_deployment
        assert deployment.name == "rerankd"
        options = deployment._deployment_config
        assert options.autoscaling_config.min_replicas == args["min_replicas"]
        assert options.autoscaling_config.max_replicas == args["max_replicas"]
        assert options.autoscaling_config.target_ongoing_requests == args["target_ongoing_requests"]
        assert options.max_ongoing_requests == args["max_ongoing_requests"]
        assert deployment.ray_actor_options == {"num_cpus": args["num_cpus"], "num_gpus": args["num_gpus"]}
        settings = deployment.init_args[0]  # what every replica builds its Settings from
        assert settings["models"] == args["models"] and settings["device"] == args["device"]


def test_scaling_from_env_and_bad_values() -> None:
    scaling = ServeScaling.from_env({"RERANKD_RAY_MAX_REPLICAS": "4", "RERANKD_RAY_NUM_GPUS": "0.5"})
    assert scaling.max_replicas == 4 and scaling.num_gpus == 0.5 and scaling.min_replicas == 1
    with pytest.raises(InvalidInput, match="RERANKD_RAY_MAX_REPLICAS"):
        ServeScaling.from_env({"RERANKD_RAY_MAX_REPLICAS": "many"})
    with pytest.raises(InvalidInput, match="replicas"):
        ServeScaling(min_replicas=3, max_replicas=2).deployment_options()
    with pytest.raises(ValueError, match="route"):
        app_builder({"models": ["a=/nowhere"], "routes": ["main=b:1"]})  # a route to a model not served


def test_serve_on_ray_quiets_the_local_ray_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.distributed import serve

    class Started(Exception):
        pass

    seen: dict[str, str | None] = {}

    def connect(address: str | None) -> None:
        seen.update({name: os.environ.get(name) for name in serve.QUIET_LOCAL_RAY})
        raise Started

    monkeypatch.setattr(serve, "connect", connect)
    for name in serve.QUIET_LOCAL_RAY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")  # the user's own value wins
    with pytest.raises(Started):
        serve.serve_on_ray(Settings(), "local")
    assert seen == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}
    monkeypatch.delenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S")
    monkeypatch.delenv("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS")
    with pytest.raises(Started):
        serve.serve_on_ray(Settings(), "auto")  # a cluster it joins keeps its own settings
    assert seen == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": None, "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": None}
