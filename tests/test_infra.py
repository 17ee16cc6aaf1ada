"""infra/, docker/ and prefect.yaml parse, and what they name exists in the project: images built by docker/,
ports and settings of enginewright/config/settings.py, pools and flows of prefect.yaml, GPU requests for the gpu pool.
(No Docker engine or Kubernetes cluster here: this checks the files, not a running deployment.)"""

import importlib
import inspect
import json
import re
from pathlib import Path

import yaml

from enginewright.config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"^enginewright/(?P<name>[a-z-]+):")


def built_here(image: str) -> bool:
    match = IMAGE.match(image)
    return match is not None and (ROOT / "docker" / f"{match['name']}.Dockerfile").is_file()


def test_compose_services_use_project_images_ports_and_settings() -> None:
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "s3", "mlflow", "prefect", "relay", "cpu-worker", "gpu-worker"} <= services.keys()
    for name in ("mlflow", "cpu-worker", "gpu-worker"):
        assert built_here(services[name]["image"]), services[name]["image"]
    defaults = Settings()
    published = {s: int(services[s]["ports"][0].rsplit(":", 2)[-1]) for s in ("s3", "mlflow", "prefect")}
    assert published == {"s3": defaults.stack_s3_port, "mlflow": defaults.stack_mlflow_port,
                         "prefect": defaults.stack_prefect_port}
    fields = {f"ENGINEWRIGHT_{name.upper()}" for name in Settings.model_fields}
    for service in services.values():
        for key in service.get("environment") or {}:
            assert not key.startswith("ENGINEWRIGHT_") or key in fields, key
    assert f"--port {defaults.stack_relay_port}" in services["relay"]["command"][-1]
    assert services["cpu-worker"]["environment"]["ENGINEWRIGHT_DEPLOY_TARGET"].endswith("specs/targets/h100.yaml")
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    worker_pools = {s["command"][s["command"].index("--pool") + 1] for s in services.values()
                    if "worker" in s.get("command", [])}
    assert worker_pools == pools == {"cpu", "gpu", "gpu-vllm"}
    init = (ROOT / "infra" / "postgres-init.sql").read_text()
    assert all(f"enginewright_{db}" in init for db in ("mlflow", "prefect", "watch"))


def test_work_pool_templates_declare_every_placeholder_and_request_gpus() -> None:
    for path in sorted((ROOT / "infra" / "work-pools").glob("*.json")):
        template = json.loads(path.read_text())
        used = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
        declared = set(template["variables"]["properties"])
        assert used <= declared, (path.name, used - declared)
        text = path.read_text()
        assert "nvidia.com/gpu" in text or "device_requests" in text or "CUDA_VISIBLE_DEVICES" in text, path.name
        image = template["variables"]["properties"].get("image", {}).get("default")
        assert image is None or built_here(image), image


def test_kubernetes_manifests_parse_and_run_the_gpu_pool_worker() -> None:
    documents = list(yaml.safe_load_all((ROOT / "infra" / "kubernetes" / "gpu-worker.yaml").read_text()))
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Secret"} <= kinds
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert built_here(container["image"]) and container["command"][container["command"].index("--pool") + 1] == "gpu"
    secret = next(d for d in documents if d["kind"] == "Secret")
    assert all(not value for key, value in secret["stringData"].items() if key.startswith("AWS_"))  # no real secrets


def test_prefect_yaml_deployments_point_at_flows_with_those_parameters() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        module_path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        parameters = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= parameters, deployment["name"]
        required = {name for name, p in inspect.signature(flow.fn).parameters.items()
                    if p.default is inspect.Parameter.empty}
        for trigger in deployment.get("triggers", []):
            assert trigger["expect"] == [{"build": "enginewright.checkpoint.updated",
                                          "deploy": "enginewright.alias.set"}[deployment["name"]]]
            assert required <= set(trigger["parameters"]) <= parameters
    by_name = {d["name"]: d for d in config["deployments"]}
    for scheduled in ("watch", "promote-poll"):
        assert by_name[scheduled]["work_pool"]["name"] == "cpu" and by_name[scheduled]["schedules"][0]["cron"]
    from enginewright.registry.promotion import ALIAS_EVENT
    from flows.watch import EVENT

    assert {ALIAS_EVENT, EVENT} == {t["expect"][0] for d in config["deployments"] for t in d.get("triggers", [])}


def test_the_build_deployment_builds_from_its_defaults_and_from_what_the_watcher_announces(
        settings, tiny_model: Path, tmp_path: Path) -> None:
    """A manual run with the deployment's default parameters must yield a valid spec (it did not: a local source
    with `revision: main` was refused), and so must the parameters a watcher's event fills in."""
    from enginewright.config.spec import build_spec
    from tasks.revisions import revision_spec, watched_spec_yaml

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    build = next(d for d in config["deployments"] if d["name"] == "build")
    defaults = build.get("parameters", {})
    assert revision_spec(settings, defaults.get("spec_yaml", ""), defaults.get("source"),
                         defaults.get("revision")) == build_spec(settings, None, {})

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("quantization: {format: int8_sq}\ncalibration: {source: ./calib.txt}\n")
    announced = watched_spec_yaml(spec_file)
    for source, revision in ((str(tiny_model), "local:" + "0" * 64), ("org/model", "a" * 40)):
        spec = revision_spec(settings, announced, source, revision)
        assert spec.source.model == source and spec.quantization.format == "int8_sq"
        assert spec.source.revision == (None if revision.startswith("local:") else revision)
        assert spec.calibration.source == str(tmp_path / "calib.txt")  # resolved against the spec's folder


def test_the_gpu_image_installs_pyprojects_own_dependencies_except_the_images_torch() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "docker"))
    import tomllib

    from image_requirements import requirements

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = requirements(ROOT / "pyproject.toml")
    assert wanted == [d for d in listed if not d.startswith("torch")] and "nvidia-modelopt==0.47.0" in wanted
    dockerfile = (ROOT / "docker" / "gpu-worker.Dockerfile").read_text()
    assert "tensorrt-llm/release:1.3.0rc20" in dockerfile and "image_requirements.py" in dockerfile
    assert "lm-eval[hf]==" not in dockerfile  # nothing re-listed by hand


def test_the_gpu_deployments_job_variables_are_declared_by_the_docker_and_kubernetes_gpu_pools() -> None:
    """A job variable a pool does not declare is silently ignored by Prefect (its schema allows extra keys): the
    GPU count would never reach the Job."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    gpu_variables = {key for d in config["deployments"] if d["work_pool"]["name"] == "gpu"
                     for key in d["work_pool"].get("job_variables", {})}
    assert "gpu_count" in gpu_variables
    for path in [ROOT / "infra" / "work-pools" / "gpu-docker.json",
                 *sorted((ROOT / "infra" / "work-pools").glob("gpu-kubernetes*.json"))]:
        declared = json.loads(path.read_text())["variables"]["properties"]
        assert gpu_variables <= declared.keys(), (path.name, gpu_variables - declared.keys())
