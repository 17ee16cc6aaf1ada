"""The whole build flow on a tiny random Llama: Prefect's ephemeral API, a SQLite MLflow store, real ModelOpt
quantization, real lm-eval runs on the shared data. Nothing is a double except that no GPU is present, so the
TensorRT-LLM step ends Skipped (asserted below)."""

import json
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts

from enginewright.bundle.manifest import verify_bundle
from enginewright.config.settings import Settings
from enginewright.config.spec import build_spec
from enginewright.registry.registry_client import registry_client
from enginewright.serving.golden import GOLDEN_PROMPTS, read_golden
from flows.build import run_build

pytestmark = pytest.mark.e2e


# resolve, fingerprint, eval-data, calibration, auto-quantize-search, quantize, export, llm-api, trtllm, evaluate (with
# the smoke check before its looks and the golden records after them), gate, bundle, log-run, store, register
TASKS_PER_BUILD = 15


def task_run_states(flow_run_id, expected: int = TASKS_PER_BUILD) -> dict[str, str]:
    """Final state name per task of a flow run. Prefect 3 records task-run states through events, written
    asynchronously, so the last few can lag the flow's return by a moment: wait for them (at most 30 s)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = {run.name.rsplit("-", 1)[0]: run.state.name for run in runs if run.state and run.state.is_final()}
            if len(states) >= expected or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def gate_artifact_markdown(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["accuracy-gate"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(artifacts) == 1
    return str(artifacts[0].data)


def test_build_registers_a_verified_bundle_and_a_rerun_is_fully_cached(
    tiny_model: Path, shared_data: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = build_spec(settings, None, {
        "source": {"model": str(tiny_model)},
        "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 4, "seq_len": 32},
        "evaluation": {"tasks": ["arc_easy", "hellaswag"], "limit": 4},
        "quantization": {"format": "int8_sq"},
        # A random model's accuracy is noise; a wide threshold lets this test be about the plumbing.
        "gate": {"max_drop_points": 100},
        "registry": {"model_name": "tiny-llama"},
    })

    from transformers import AutoModelForCausalLM

    loads: list[str] = []  # every load of the source weights (enginewright.quant.models.load_model and its callers)
    load = AutoModelForCausalLM.from_pretrained

    def counted(*args, **kwargs):
        loads.append(str(args[0] if args else kwargs.get("pretrained_model_name_or_path")))
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counted)
    first_state = run_build(spec, settings)
    first = first_state.result()
    # One load per purpose: calibrate (quantize), export, the baseline, the candidate — the smoke check and the
    # golden records run on the evaluation's two models (the build loaded the weights 7 times before).
    assert loads == [str(tiny_model)] * 4, loads
    states = task_run_states(first_state.state_details.flow_run_id)
    assert states["tensorrt-llm-build"] == "Skipped"
    assert states["auto-quantize-search"] == "Skipped"  # a one-format build: "skipped: not asked for", not "done"
    assert first.engine == {"status": "skipped", "reason": "no CUDA GPU on this worker"}
    assert first.registered_now and first.registered.version == "1"
    assert first.gate["overall"] == "pass" and first.registered.aliases == ["candidate"]
    assert states["evaluate"] == "Completed" and states["gate"] == "Completed"
    work = settings.builds_dir / first.build_key[:16]  # enginewright.keys.work_dir.WorkDir.open
    smoke = json.loads((work / "evaluation" / "smoke.json").read_text())["result"]
    assert smoke["verdict"] == "not-informative" and len(smoke["prompts"]) == 4  # a random model: its baseline loops
    assert "| arc_easy | acc_norm | 4 of 4 (look 1/1) |" in gate_artifact_markdown(first_state.state_details.flow_run_id)

    client = registry_client(settings.tracking_uri)
    version = client.get_model_version("tiny-llama", "1")
    assert version.tags["build_key"] == first.build_key
    assert version.tags["quantization.format"] == "int8_sq"
    assert version.tags["engine.status"] == "skipped"
    assert version.description.startswith("**Evidence:** [accuracy gate plot](get-artifact?path=gate%2Fgate_plot.png")
    assert "\n\n# tiny-llama — int8_sq bundle" in version.description  # the card, after its evidence
    assert "\n### Accuracy gate: **pass**" in version.description
    assert version.tags["gate.verdict"] == "pass" and int(version.tags["bundle.bytes"]) == first.bundle_bytes
    # A few headline tags on the version (it carried ~35, which buried the verdict); the lineage is on the run.
    assert len(version.tags) <= 11 and "gate.hellaswag.verdict" not in version.tags, sorted(version.tags)
    assert version.tags["gate.plan"].startswith("arc_easy 4 documents in 1 looks"), version.tags["gate.plan"]
    assert client.get_model_version_by_alias("tiny-llama", "candidate").version in ("1", 1)

    run = client.get_run(first.registered.run_id)
    assert run.data.tags["quantization.quant_algo"] == "W8A8_SQ_PER_CHANNEL"
    assert run.data.tags["source.kind"] == "local" and len(run.data.tags["source.revision"]) == 64
    assert run.data.tags["gate.hellaswag.verdict"] == "pass"
    # Named by model and format (it was build-<hash>), and spanning the build (it was created at the end: ~0.1 s).
    assert run.info.run_name == f"tiny-llama int8_sq {first.build_key[:8]}"
    assert run.info.end_time - run.info.start_time > 2000, (run.info.start_time, run.info.end_time)
    # The bundle is recorded as MLflow 3 records a model stored outside it, linked to the version.
    bundle_model = client.get_logged_model(version.tags["bundle.model_id"])
    assert bundle_model.tags["mlflow.model.isExternal"] == "true" and bundle_model.source_run_id == run.info.run_id
    assert bundle_model.tags["bundle.uri"] == version.source and bundle_model.model_type == "enginewright-bundle"
    assert json.loads(bundle_model.tags["mlflow.modelVersions"]) == [{"name": "tiny-llama", "version": "1"}]
    assert run.data.params["quantization.format"] == "int8_sq"
    assert run.data.metrics["baseline.arc_easy.n"] == 4
    assert 0 <= run.data.metrics["candidate.hellaswag.acc_norm"] <= 1
    evidence = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert evidence == {"evaluation/baseline-samples.jsonl", "evaluation/candidate-samples.jsonl",
                        "evaluation/samples.json"}
    gate_files = {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    assert gate_files == {"gate/gate_report.json", "gate/gate_plot.png"}
    assert run.data.tags["gate.verdict"] == "pass"
    assert "gate.arc_easy.ci_low_points" in run.data.metrics

    # The bundle downloaded back from the registry verifies against its manifest.
    downloaded = Path(download_artifacts(artifact_uri=client.get_model_version_download_uri("tiny-llama", "1"),
                                         dst_path=str(tmp_path / "pulled"), tracking_uri=settings.tracking_uri))
    manifest = verify_bundle(downloaded)
    paths = {f["path"] for f in manifest["files"]}
    assert {"llm_api.yaml", "MODEL_CARD.md", "checkpoint/config.json", "checkpoint/hf_quant_config.json"} <= paths
    assert manifest["build_key"]["digest"] == first.build_key == manifest["bundle_id"]
    assert manifest["engine"]["status"] == "skipped"
    # where calibration and export ran, as their steps recorded it (a cached rerun keeps these, not today's memory)
    assert {step: plan["kind"] for step, plan in manifest["memory_plan"].items()} == {"quantize": "one_device",
                                                                                     "export": "one_device"}
    assert not (downloaded / "engine").exists()  # nothing pretends an engine exists
    # The golden records a release is later verified against: under the manifest, from the evaluated candidate.
    golden = read_golden(downloaded)
    assert golden is not None and manifest["golden"] == golden.digest
    assert {"golden/continuations.json", "golden/answers.json"} <= paths
    assert len(golden.continuations) == len(GOLDEN_PROMPTS) and golden.task == "arc_easy"
    assert len(golden.answers) == 40 and all(a.prompt.endswith("\nAnswer:") for a in golden.answers)

    loads.clear()
    second_state = run_build(spec, settings)
    second = second_state.result()
    assert loads == []  # fully cached: nothing loaded
    states = task_run_states(second_state.state_details.flow_run_id)
    assert set(states.values()) == {"Cached"}, states
    assert len(states) == TASKS_PER_BUILD
    assert second.build_key == first.build_key and not second.registered_now
    assert [str(v.version) for v in client.search_model_versions("name = 'tiny-llama'")] == ["1"]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_pull_verifies_and_refuses_a_corrupted_bundle(
    tiny_model: Path, shared_data: Path, settings: Settings, tmp_path: Path, capsys
) -> None:
    from enginewright.cli.main import main

    spec = build_spec(settings, None, {
        "source": {"model": str(tiny_model)},
        "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 2, "seq_len": 16},
        "evaluation": {"tasks": ["arc_easy"], "limit": 2},
        "gate": {"max_drop_points": 100, "smoke": False},
        "registry": {"model_name": "tiny-pull"},
    })
    run_build(spec, settings).result()

    assert main(["pull", "models:/tiny-pull@candidate", str(tmp_path / "good")]) == 0
    assert "files verified" in capsys.readouterr().out
    verify_bundle(tmp_path / "good")

    # Damage the stored copy (the local artifact store is a directory): pull must refuse and leave nothing.
    client = registry_client(settings.tracking_uri)
    stored = Path(client.get_model_version("tiny-pull", "1").source.removeprefix("file://"))
    with (stored / "llm_api.yaml").open("a") as handle:
        handle.write("# tampered\n")
    assert main(["pull", "models:/tiny-pull/1", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's download progress bar
    assert err.startswith("enginewright: error: models:/tiny-pull/1 (version 1) failed verification: "
                          "bundle file llm_api.yaml has ")
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad")] == []

    assert main(["pull", "models:/tiny-pull@nope", str(tmp_path / "x")]) == 2
    assert main(["pull", "tiny-pull", str(tmp_path / "x")]) == 2
    assert "is not models:/<name>@<alias>" in capsys.readouterr().err


def test_a_changed_step_recomputes_with_every_step_after_it_and_nothing_before(
    tiny_model: Path, shared_data: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog,
) -> None:
    """An upgrade that changes the gate's code (here: its source as the cache policies read it) must never return
    the old gate report: the gate and the steps after it run again, every step before it comes from the cache."""
    from enginewright.keys import cache_policies

    spec = build_spec(settings, None, {
        "source": {"model": str(tiny_model)},
        "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 2, "seq_len": 16},
        "evaluation": {"tasks": ["arc_easy"], "limit": 2},
        "gate": {"max_drop_points": 100, "smoke": False},
        "registry": {"model_name": "tiny-upgrade"},
    })
    first = run_build(spec, settings).result()

    read = cache_policies.read_module_source
    monkeypatch.setattr(cache_policies, "read_module_source",
                        lambda name: read(name) + "\n# fixed\n" if name == "tasks.gate" else read(name))
    cache_policies.step_code_version.cache_clear()
    try:
        second_state = run_build(spec, settings)
        second = second_state.result()
    finally:
        cache_policies.step_code_version.cache_clear()
    states = task_run_states(second_state.state_details.flow_run_id)
    recomputed = {name for name, state in states.items() if state != "Cached"}
    assert recomputed == {"gate", "bundle", "log-run", "store-bundle", "register"}, states
    assert states["quantize"] == states["evaluate"] == "Cached"
    assert second.build_key == first.build_key  # same bundle identity: the registry keeps one version
    assert not second.registered_now and second.registered.version == first.registered.version


def test_a_registered_verdict_moves_only_by_an_explicit_reevaluation_under_its_own_plan(
    tiny_model: Path, shared_data: Path, settings: Settings
) -> None:
    """A new plan or margin on the same build key (the bundle is the same) is evaluated and recorded in a run of its
    own, linked to the version, and leaves the version's verdict, gate tags and `candidate` alias as they were (it
    was: a larger plan re-tagged the version, a margin the model cannot show took its alias). `--reevaluate` re-judges
    the version, under the plan it was judged under only."""
    from enginewright.errors import InputError

    def spec(limit: int, max_drop: float, reevaluate: bool = False):
        return build_spec(settings, None, {
            "source": {"model": str(tiny_model)},
            "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 2,
                            "seq_len": 16},
            "evaluation": {"tasks": ["arc_easy"], "limit": limit},
            "gate": {"max_drop_points": max_drop, "smoke": False},
            "registry": {"model_name": "tiny-reeval", "reevaluate": reevaluate},
        })

    first = run_build(spec(2, 100), settings).result()
    client = registry_client(settings.tracking_uri)
    assert first.registered.version == "1" and first.registered.aliases == ["candidate"]
    judged = client.get_model_version("tiny-reeval", "1").tags
    assert judged["gate.plan"].startswith("arc_easy 2 documents in ") and "drop ≤ 100 points" in judged["gate.plan"]

    def unchanged() -> None:
        version = client.get_model_version("tiny-reeval", "1")
        assert {k: version.tags[k] for k in judged} == judged
        assert client.get_model_version_by_alias("tiny-reeval", "candidate").version in ("1", 1)

    again = run_build(spec(3, 100), settings).result()  # a larger plan: same build key, new evidence
    assert again.build_key == first.build_key and again.registered.version == "1" and again.version_verdict == "pass"
    runs = client.search_runs([client.get_experiment_by_name("enginewright-builds").experiment_id])
    later = next(r for r in runs if r.info.run_id != first.registered.run_id)
    assert len(runs) == 2 and later.data.tags["enginewright.reevaluation_of"] == "1"
    assert later.data.tags["enginewright.reevaluation_applied"] == "false"
    assert later.data.tags["gate.arc_easy.documents"] == "3/3" and again.evaluation_run_id == later.info.run_id
    assert later.info.run_name == f"tiny-reeval fp8 re-evaluation {first.build_key[:8]}"
    assert again.evaluated_again.startswith("already registered as v1; evaluated again under plan "
                                           f"{later.data.tags['gate.plan']}: verdict pass")
    assert later.data.tags["gate.plan"].startswith("arc_easy 3 documents in 1 looks, drop ≤ 100 points;")
    assert "the version's verdict, pass, is unchanged" in again.evaluated_again
    unchanged()

    # A margin the random model cannot show: inconclusive now, and the version still passes and holds `candidate`.
    tight = run_build(spec(3, 0.0001), settings).result()
    assert tight.gate["overall"] == "inconclusive" and tight.version_verdict == "pass"
    unchanged()

    # Re-judging it under a plan chosen after its data were seen is refused, before anything is logged.
    with pytest.raises(InputError, match="v1 of tiny-reeval was judged under plan 'arc_easy 2 documents"):
        run_build(spec(3, 0.0001, reevaluate=True), settings).result()
    assert len(client.search_runs([later.info.experiment_id])) == 3
    unchanged()

    # Under its own plan, with other evidence (as after a fix to the evaluation code: here the version's recorded
    # digest is made stale), the explicit re-evaluation moves the version's gate tags to its own run.
    client.set_model_version_tag("tiny-reeval", "1", "gate.digest", "from-older-code")
    rejudged = run_build(spec(2, 100, reevaluate=True), settings).result()
    version = client.get_model_version("tiny-reeval", "1")
    assert rejudged.evaluated_again is None and rejudged.version_verdict == "pass"
    assert version.tags["gate.digest"] == judged["gate.digest"] and version.tags["gate.plan"] == judged["gate.plan"]
    assert version.tags["gate.run_id"] == rejudged.evaluation_run_id != first.registered.run_id
    applied = client.get_run(rejudged.evaluation_run_id).data.tags
    assert applied["enginewright.reevaluation_applied"] == "true"
    assert [str(v.version) for v in client.search_model_versions("name = 'tiny-reeval'")] == ["1"]
