"""A release's whole life on a GPU worker with vLLM, through enginewright's own commands: built (the candidate
scored by vLLM, the simulated candidate beside it per document), deployed to a vLLM target whose serving host runs
each release's own `vllm-serve.sh`, verified live, and — where the host loads other weights — rolled back.

Runs with the build lane's python (scripts/gpu_worker/install.sh --lane build); vLLM only in its own lane, named by
--vllm-python (ENGINEWRIGHT_VLLM_PYTHON for the build, PATH for the serving host). ENGINEWRIGHT_HOME is --home.

    python benchmarks/vllm_release.py build --model DIR --vllm-python P --data DIR --home H --out OUT
    python benchmarks/vllm_release.py serve --vllm-python P --home H --out OUT

`build` runs `enginewright build` once per calibration seed (`--seeds 0,1`: two versions of one model, each its own
build key); `serve` deploys version 1 (must end verified), then version 2 — the second build's, or with `--seeds 0`
version 1's bundle registered again — on a host that serves version 1's checkpoint with its weights shuffled under
v2's name (must fail verification and roll back to version 1, which the host serves again). Each stage prints a table and writes `<stage>.json` (and the commands' logs) under OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL_NAME = "SmolLM2-135M-Instruct"
TARGET = "h100-vllm"


def environment(home: Path, vllm_python: Path, data: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "ENGINEWRIGHT_HOME": str(home), "ENGINEWRIGHT_VLLM_PYTHON": str(vllm_python),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "PYTHONPATH": str(ROOT)}  # this checkout, wherever the worker put it
    if data is not None:
        env["ENGINEWRIGHT_SHARED_DATA_DIR"] = str(data)
    return env


def run(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """One enginewright command, its output teed to `log`; returns its exit code, seconds and last lines."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            sys.stdout.write(line)
        code = process.wait()
    lines = log.read_text().splitlines()
    return {"command": " ".join(command[1:]), "exit": code, "seconds": round(time.perf_counter() - started, 1),
            "tail": lines[-25:]}


def registry(home: Path) -> Any:
    """The MLflow registry of the builds under `home` (ENGINEWRIGHT_HOME)."""
    from enginewright.config.settings import Settings
    from enginewright.registry.registry_client import registry_client

    return registry_client(Settings(home=home).tracking_uri)


def version_tags(home: Path, version: str) -> dict[str, str]:
    client = registry(home)
    return dict(client.get_model_version(MODEL_NAME, version).tags or {})


def latest_version(home: Path) -> str:
    found = registry(home).search_model_versions(f"name = '{MODEL_NAME}'")
    return str(max(int(v.version) for v in found))


def build(args: argparse.Namespace) -> None:
    env = environment(args.home, args.vllm_python, args.data)
    enginewright = str(Path(sys.executable).parent / "enginewright")
    results = []
    for seed in args.seeds:
        command = [enginewright, "build", "--model", str(args.model), "--quant", "fp8", "--tasks", args.tasks,
                   "--limit", str(args.limit), "--max-drop", str(args.max_drop), "--seed", str(seed),
                   "--model-name", MODEL_NAME]
        if args.no_smoke:  # the smoke check's two loads and token-by-token generation: ~90 s of device time
            spec = args.out / "no-smoke.yaml"
            spec.write_text("gate:\n  smoke: false\n")
            command += ["--spec", str(spec)]
        result = run(command, env, args.out / f"build-seed{seed}.log")
        result["seed"] = seed
        if result["exit"] == 0:
            result["version"] = latest_version(args.home)
            result["tags"] = {k: v for k, v in version_tags(args.home, result["version"]).items()
                              if k.startswith(("runtime.", "gate.", "quantization."))}
        results.append(result)
    write(args.out, "build-seed" + "-".join(map(str, args.seeds)), {"builds": results})
    print("\n| build | exit | seconds | runtime.candidate | gate.verdict |\n|---|---|---|---|---|")
    for r in results:
        tags = r.get("tags", {})
        print(f"| seed {r['seed']} → v{r.get('version', '-')} | {r['exit']} | {r['seconds']} | "
              f"{tags.get('runtime.candidate', '-')} | {tags.get('gate.verdict', '-')} |")


def write_target(path: Path, port: int) -> Path:
    target = (ROOT / "specs" / "targets" / f"{TARGET}.yaml").read_text()
    path.write_text(target.replace("port: 8000", f"port: {port}").replace(":8000", f":{port}") +
                    "verify: {ready_timeout_s: 600, load_requests: 32, load_concurrency: 4, load_max_tokens: 32}\n")
    return path


def scrape(endpoint: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as response:
        return response.read().decode()


def serve(args: argparse.Namespace) -> None:
    from enginewright.config.settings import Settings
    from enginewright.serving.openai_endpoint import Endpoint, wait_until_serving
    from enginewright.serving.serving_config import read_deployment
    from tests.serving_host import ServingHost, shuffled_weights

    env = environment(args.home, args.vllm_python)
    os.environ.update(env)
    settings = Settings(home=args.home)
    enginewright = str(Path(sys.executable).parent / "enginewright")
    target = write_target(args.out / f"{TARGET}.yaml", args.port)
    endpoint = f"http://127.0.0.1:{args.port}"
    root = settings.serving_dir / TARGET / MODEL_NAME
    bundle_v1 = Path(version_source(args.home, "1"))
    wrong = shuffled_weights(bundle_v1 / "checkpoint", args.home / "models" / "wrong-weights" / "checkpoint")
    second, how = second_version(args.home)
    report: dict[str, Any] = {"second_version": {"version": second, "what": how}}
    with ServingHost(root, args.out / "serving-host.log", serve_instead={second: wrong},
                     path_first=(args.vllm_python.parent,)) as host:
        report["deploy_v1"] = run([enginewright, "deploy", MODEL_NAME, "--version", "1", "--target", str(target)],
                                  env, args.out / "deploy-v1.log")
        report["v1_tags"] = deploy_tags(args.home, "1")
        v1_release = (root / "current").resolve()
        if report["deploy_v1"]["exit"] == 0:
            (args.out / "metrics-live.txt").write_text(scrape(endpoint))
        report["deploy_v2"] = run([enginewright, "deploy", MODEL_NAME, "--version", second, "--target", str(target)],
                                  env, args.out / "deploy-v2.log")
        report["v2_tags"] = deploy_tags(args.home, second)
        report["current_after"] = str((root / "current").resolve())
        report["current_is_v1"] = (root / "current").resolve() == v1_release
        model_id = f"{MODEL_NAME}-v{read_deployment((root / 'current').resolve())['version']}"
        ready = wait_until_serving(Endpoint(endpoint), model_id, "0.26.0", 600)
        report["restored_serving"] = {"model_id": model_id, "ready": ready.ready, "seconds": round(ready.seconds, 1)}
        report["host_started"] = list(host.started)
    write(args.out, "serve", report)
    print("\n| step | exit | seconds | verification | status |\n|---|---|---|---|---|")
    for step, tags in (("deploy_v1", report["v1_tags"]), ("deploy_v2", report["v2_tags"])):
        print(f"| {step} | {report[step]['exit']} | {report[step]['seconds']} | "
              f"{tags.get(f'deploy.{TARGET}.verification', '-')} | {tags.get(f'deploy.{TARGET}.status', '-')} |")
    print(f"current → {report['current_after']} (v1's release: {report['current_is_v1']}); restored release "
          f"serving again after {report['restored_serving']['seconds']} s: {report['restored_serving']['ready']}")


def second_version(home: Path) -> tuple[str, str]:
    """Version 2: the second build's where `build --seeds 0,1` ran; else version 1's bundle registered again (its
    source, run, tags and card), which costs seconds instead of a build — what is under test is the host."""
    client = registry(home)
    latest = latest_version(home)
    if latest != "1":
        return latest, "the second build's"
    first = client.get_model_version(MODEL_NAME, "1")
    again = client.create_model_version(MODEL_NAME, first.source, run_id=first.run_id, tags=dict(first.tags or {}),
                                        description=first.description)
    return str(again.version), "version 1's bundle registered again"


def version_source(home: Path, version: str) -> str:
    source = registry(home).get_model_version(MODEL_NAME, version).source
    return source.removeprefix("file://")


def deploy_tags(home: Path, version: str) -> dict[str, str]:
    return {k: v for k, v in version_tags(home, version).items() if k.startswith(f"deploy.{TARGET}.")}


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in ("build", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--vllm-python", type=Path, required=True, help="the vLLM lane's python")
        p.add_argument("--home", type=Path, required=True, help="ENGINEWRIGHT_HOME (scratch)")
        p.add_argument("--out", type=Path, required=True)
        if name == "build":
            p.add_argument("--model", type=Path, required=True, help="the bf16 source checkpoint")
            p.add_argument("--data", type=Path, required=True, help="the shared data folder (eval/, calib/)")
            p.add_argument("--tasks", default="arc_easy,hellaswag")
            p.add_argument("--limit", type=int, default=400)
            p.add_argument("--max-drop", type=float, default=5.0)
            p.add_argument("--no-smoke", action="store_true", help="leave the smoke check out (gate.smoke: false)")
            p.add_argument("--seeds", type=lambda text: [int(x) for x in text.split(",")], default=[0, 1],
                           help="calibration seeds, one build (and version) each, in order [default: 0,1]")
        else:
            p.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build(args) if args.stage == "build" else serve(args)


if __name__ == "__main__":
    main()
