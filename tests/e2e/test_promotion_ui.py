"""Promotion as a person does it: in a real headless browser (Debian's chromium, driven by Playwright), open the
MLflow UI page of a version, click "Add aliases", type `production`, save. Everything after the click is real:
MLflow's registry webhook (signed) → the stack's relay → a Prefect event → the `deploy` deployment's trigger
(prefect.yaml, deployed with `prefect deploy --all`) → a process worker on the `cpu` pool runs `deploy_version`,
which pulls the bundle from S3, verifies it, checks it fits the H100 target and renders the serving config.
The alias poll deployment, run on the same worker afterwards, must not deploy the same change again.

The bundle is bundle-shaped with stand-in weights (tests/registered_bundle.py): what is under test is what
happens after registration. Each run prints the time from the click to the rendered configuration."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.server.auth.client import AuthServiceClient

from enginewright.config.settings import Settings
from enginewright.stack.servers import Stack
from tests.e2e.conftest import wait_for
from tests.e2e.test_watch_service import deployment_pools, prefect_cli, stop_worker
from tests.registered_bundle import register_bundle

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes say: without the background-networking flags chromium keeps dialling out of a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODEL = "promoted-chat"


def deploy_runs(env: dict[str, str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        (deployment,) = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["deploy"])))
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id={"any_": [deployment.id]}))


def set_alias_in_the_ui(page, mlflow_url: str, version: str, alias: str, model: str = MODEL) -> float:
    """Click and type as a person would; returns the monotonic time of the click on "Save aliases"."""
    page.goto(f"{mlflow_url}/#/models/{model}/versions/{version}")
    page.get_by_title("Add aliases").or_(page.get_by_title("Edit aliases")).click()  # Edit: it has `candidate`
    dialog = page.get_by_role("dialog")
    box = dialog.get_by_role("combobox")
    box.click()
    box.press_sequentially(alias, delay=40)
    box.press("Enter")
    dialog.get_by_role("button", name="Save aliases").click()
    clicked = time.monotonic()
    dialog.wait_for(state="hidden")
    return clicked


def reloaded_shows(page, text: str) -> bool:
    from playwright.sync_api import TimeoutError as NotThereYet

    page.reload()
    try:
        page.get_by_text(text).wait_for(timeout=5000)
        return True
    except NotThereYet:
        return False


def rendered_version(serving: Path) -> str | None:
    current = serving / "h100" / MODEL / "current" / "deployment.json"
    return json.loads(current.read_text())["version"] if current.is_file() else None


def worker_env(stack: Stack, tmp_path: Path, home: Path, target: Path) -> dict[str, str]:
    """The environment of the `cpu` worker: the stack's client settings, its own home, the deploy target."""
    return {**os.environ, **stack.client_env(), "ENGINEWRIGHT_HOME": str(home), "ENGINEWRIGHT_CHECKOUT": str(ROOT),
            "ENGINEWRIGHT_DEPLOY_TARGET": str(target), "PREFECT_HOME": str(tmp_path / "prefect-client")}


def builder_settings(stack: Stack, tmp_path: Path) -> Settings:
    """Where the tests' bundles are registered from: the stack's MLflow and S3."""
    return Settings(home=tmp_path / "builder-home", mlflow_tracking_uri=stack.mlflow_url,
                    bundle_store=f"s3://{stack.settings.stack_bucket}/bundles", s3_endpoint_url=stack.s3_url)


def start_cpu_worker(env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    """The work pools, every deployment of prefect.yaml, and a process worker on the `cpu` pool (log in tmp_path)."""
    for pool in deployment_pools():  # every pool prefect.yaml names, or `deploy --all` refuses
        prefect_cli(["work-pool", "create", pool, "--type", "process", "--overwrite"], env)
    prefect_cli(["--no-prompt", "deploy", "--all"], env)
    log = (tmp_path / "worker-cpu.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu"], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_setting_production_in_the_mlflow_ui_renders_the_serving_config(stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Debian's chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    home = tmp_path / "worker-home"
    env = worker_env(stack, tmp_path, home, ROOT / "specs" / "targets" / "h100.yaml")
    client_settings = builder_settings(stack, tmp_path)
    fits = register_bundle(client_settings, tmp_path / "bundles", MODEL, fmt="fp8")
    too_new = register_bundle(client_settings, tmp_path / "bundles", MODEL, fmt="mxfp8")  # Blackwell only

    worker = start_cpu_worker(env, tmp_path)
    serving = home / "serving"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            # The stack's MLflow asks for a login (basic auth): a person with a user of their own, made by the admin.
            password = secrets.token_urlsafe(16)
            AuthServiceClient(stack.mlflow_url).create_user("releaser", password)
            page = browser.new_page(viewport={"width": 1400, "height": 1000},
                                    http_credentials={"username": "releaser", "password": password})

            clicked = set_alias_in_the_ui(page, stack.mlflow_url, fits.version, "production")
            (run,) = wait_for(lambda: deploy_runs(env), 60, "the deploy run the alias event starts")
            run_created = time.monotonic() - clicked
            wait_for(lambda: rendered_version(serving) == fits.version, 180, "the rendered serving config")
            rendered = time.monotonic() - clicked
            print(f"\nalias click → deploy run created {run_created:.1f} s → serving config rendered {rendered:.1f} s")
            release = (serving / "h100" / MODEL / "current").resolve()
            assert (release / "trtllm-serve.sh").is_file()
            assert (release / "triton" / "tensorrt_llm" / "1" / "model.yaml").is_file()

            # What the person sees on the version afterwards: the rollout tags (written just after the switch).
            wait_for(lambda: reloaded_shows(page, str(release)), 60, "the rollout tags on the version page")
            assert page.get_by_text("deploy.h100.status").count() == 1
            # The evidence where the verdict is: the version's description links the gate plot — served from the
            # build run's artifacts to this person's session (it was three clicks away) — and the build's run.
            (tmp_path / "version-page.html").write_text(page.content())  # for a failure's post-mortem
            plot = page.get_by_role("link", name="accuracy gate plot")
            assert plot.count() == 1, "no gate plot link on the version page"
            served = page.request.get(plot.evaluate("a => a.href"))
            assert served.status == 200 and served.body()[:8] == b"\x89PNG\r\n\x1a\n", served.status
            assert page.get_by_role("link", name="the build's run").count() == 1
            page.screenshot(path=str(tmp_path / "version-after-deploy.png"))

            # An MXFP8 version promoted onto the H100 target is refused: the run fails, says why on the version,
            # and the serving config stays at the first version.
            set_alias_in_the_ui(page, stack.mlflow_url, too_new.version, "production")
            refused = wait_for(lambda: [r for r in deploy_runs(env) if r.parameters.get("version") == too_new.version
                                        and r.state_type and r.state_type.value in ("FAILED", "CRASHED")],
                               180, "the refused deploy run to end")
            assert refused[0].state_type.value == "FAILED"
            browser.close()

        from enginewright.registry.registry_client import registry_client

        tags = registry_client(stack.mlflow_url).get_model_version(MODEL, too_new.version).tags
        assert tags["deploy.h100.status"] == "refused"
        assert "mxfp8 on TensorRT-LLM 1.3.0rc20 needs a GPU of compute capability 10.0+" in tags["deploy.h100.reason"]
        assert rendered_version(serving) == fits.version

        # The alias poll (the webhook's fallback) sees the same alias state: it must announce nothing new.
        out = prefect_cli(["deployment", "run", "poll_aliases/promote-poll", "--watch", "--watch-timeout", "120"], env)
        assert "Completed" in out, out
        time.sleep(5)  # longer than an event takes to become a run here (about 1 s)
        runs = deploy_runs(env)
        assert sorted(r.parameters["version"] for r in runs) == sorted([fits.version, too_new.version]), \
            [(r.name, r.parameters) for r in runs]
        assert run.parameters["alias"] == "production"
    finally:
        stop_worker(worker, env)
        shutil.copy(tmp_path / "worker-cpu.log", tmp_path / "worker-cpu.kept.log")


VERIFIED_MODEL = "verified-chat"


def test_promoting_a_good_version_ends_verified_and_a_broken_one_rolls_back(stack: Stack, tmp_path: Path,
                                                                           tiny_model: Path, smollm2: Path,
                                                                           shared_data: Path) -> None:
    """The loop after the click, closed: the target names an endpoint, a serving host (tests/serving_host.py) runs
    each switched release's own trtllm-serve.sh (the CPU stand-in), and the deploy run verifies it live. The good
    version ends verified; the broken one (its host loaded another checkpoint) is rolled back by itself — current,
    alias, tags, history — with its reason on the version page. Prints click → verified and click → rolled back."""
    from playwright.sync_api import sync_playwright

    from enginewright.registry.registry_client import registry_client
    from tests.serving_host import ServingHost
    from tests.test_verify import free_port, write_target

    home = tmp_path / "worker-home"
    target = write_target(tmp_path / "cpu-serving.yaml", free_port(), ready_timeout_s=120, load_requests=8)
    env = worker_env(stack, tmp_path, home, target)
    client_settings = builder_settings(stack, tmp_path)
    data = shared_data / "eval"
    good = register_bundle(client_settings, tmp_path / "bundles", VERIFIED_MODEL, checkpoint=tiny_model, golden_data=data)
    broken = register_bundle(client_settings, tmp_path / "bundles", VERIFIED_MODEL, checkpoint=tiny_model,
                             golden_data=data)
    other = tmp_path / "other" / "checkpoint"  # the host loads SmolLM2's weights instead of the release's
    other.parent.mkdir()
    other.symlink_to(smollm2, target_is_directory=True)

    worker = start_cpu_worker(env, tmp_path)
    root = home / "serving" / "cpu" / VERIFIED_MODEL
    registry = registry_client(stack.mlflow_url)

    def tag(version: str, key: str) -> str | None:
        return (registry.get_model_version(VERIFIED_MODEL, version).tags or {}).get(f"deploy.cpu.{key}")

    try:
        with ServingHost(root, tmp_path / "serving.log", serve_instead={broken.version: other}), \
                sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            password = secrets.token_urlsafe(16)
            AuthServiceClient(stack.mlflow_url).create_user("verifier", password)
            page = browser.new_page(viewport={"width": 1400, "height": 1000},
                                    http_credentials={"username": "verifier", "password": password})

            clicked = set_alias_in_the_ui(page, stack.mlflow_url, good.version, "production", VERIFIED_MODEL)
            wait_for(lambda: tag(good.version, "verification") is not None, 300, "the good version's verification")
            verified = time.monotonic() - clicked
            assert tag(good.version, "verification") == "verified", tag(good.version, "verification_detail")
            assert "golden 16/16 exact" in (tag(good.version, "verification_detail") or "")

            clicked = set_alias_in_the_ui(page, stack.mlflow_url, broken.version, "production", VERIFIED_MODEL)
            wait_for(lambda: tag(broken.version, "status") == "rolled back", 300, "the broken version's rollback")
            rolled_back = time.monotonic() - clicked
            print(f"\nalias click → verified {verified:.1f} s (checks: {tag(good.version, 'verification_seconds')}); "
                  f"alias click → rolled back {rolled_back:.1f} s (checks: {tag(broken.version, 'verification_seconds')})")
            assert "golden replay" in (tag(broken.version, "reason") or "")
            wait_for(lambda: reloaded_shows(page, "rolled back"), 60, "the rollback on the version page")
            page.screenshot(path=str(tmp_path / "version-rolled-back.png"))
            browser.close()

        assert str(registry.get_model_version_by_alias(VERIFIED_MODEL, "production").version) == good.version
        current = json.loads((root / "current" / "deployment.json").read_text())
        assert current["version"] == good.version

        # The alias moved back was claimed: the poll announces nothing, no third deploy run.
        out = prefect_cli(["deployment", "run", "poll_aliases/promote-poll", "--watch", "--watch-timeout", "120"], env)
        assert "Completed" in out, out
        time.sleep(5)
        runs = [r for r in deploy_runs(env) if r.parameters.get("model_name") == VERIFIED_MODEL]
        assert sorted(r.parameters["version"] for r in runs) == sorted([good.version, broken.version]), \
            [(r.name, r.parameters) for r in runs]
    finally:
        stop_worker(worker, env)
        shutil.copy(tmp_path / "worker-cpu.log", tmp_path / "worker-cpu.kept.log")
