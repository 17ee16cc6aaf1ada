"""Registration converges: a rerun sets what the gate earned (the `candidate` alias), once, on the right version."""

from __future__ import annotations

from pathlib import Path

from enginewright.registry.registry_client import registry_client
from tasks.register import CANDIDATE_ALIAS, RunRecord, log_build_run, register_version


def record(key: str) -> RunRecord:
    return RunRecord(model_name="converge", build_key=key, evidence={}, params={}, metrics={},
                     tags={"build_key": key, "gate.verdict": "pass"}, description="# card")


def test_a_passing_version_left_without_its_alias_gets_it_on_the_rerun(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = (tmp_path / "artifacts").as_uri()
    first = record("a" * 64)
    run = log_build_run(first, uri, root)
    # As a build killed between creating the version and setting the alias leaves it:
    created = register_version(first, run.run_id, str(tmp_path / "bundle-a"), gate_passed=False, tracking_uri=uri)
    assert created.created and created.aliases == []

    rerun = register_version(first, run.run_id, str(tmp_path / "bundle-a"), gate_passed=True, tracking_uri=uri)
    assert not rerun.created and rerun.version == created.version and rerun.aliases == [CANDIDATE_ALIAS]
    client = registry_client(uri)
    assert str(client.get_model_version_by_alias("converge", CANDIDATE_ALIAS).version) == created.version

    # A newer passing version takes the alias; a rerun of the older build does not take it back.
    second = record("b" * 64)
    run2 = log_build_run(second, uri, root)
    newer = register_version(second, run2.run_id, str(tmp_path / "bundle-b"), gate_passed=True, tracking_uri=uri)
    register_version(first, run.run_id, str(tmp_path / "bundle-a"), gate_passed=True, tracking_uri=uri)
    assert str(client.get_model_version_by_alias("converge", CANDIDATE_ALIAS).version) == newer.version
    assert len(client.search_model_versions("name = 'converge'")) == 2


def test_the_version_carries_its_evidence_and_the_run_lists_the_bundle_model(tmp_path: Path) -> None:
    """A new user found the gate plot three clicks away, the bundle path cut off and "Logged models —" on the run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = record("c" * 64)
    run = log_build_run(first, uri, (tmp_path / "artifacts").as_uri())
    bundle = "s3://bundles/" + "c" * 64 + "/run"
    created = register_version(first, run.run_id, bundle, gate_passed=True, tracking_uri=uri)
    client = registry_client(uri)
    version = client.get_model_version("converge", created.version)
    evidence, card = version.description.split("\n\n", 1)
    plot = f"get-artifact?path=gate%2Fgate_plot.png&run_uuid={run.run_id}"
    experiment = client.get_run(run.run_id).info.experiment_id
    assert evidence == (f"**Evidence:** [accuracy gate plot]({plot}) · [the build's run](#/experiments/{experiment}/runs/"
                        f"{run.run_id}) · bundle `{bundle}`")
    assert card == "# card"
    outputs = client.get_run(run.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [version.tags["bundle.model_id"]]


def test_a_key_that_failed_under_one_plan_is_not_registered_on_a_verdict_under_another(tmp_path: Path) -> None:
    """The attacker's widened margin, on a key with no version: it failed at `--max-drop 1`, passed at `--max-drop
    100` on the same records, and registered. A verdict under a margin chosen after the fail was seen is refused;
    the same plan, or a key that never failed, registers as before."""
    import pytest

    from enginewright.errors import GateFailed

    uri, root = f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()

    def judged(key: str, verdict: str, max_drop: int) -> RunRecord:
        plan = f"arc_easy 300 documents in 3 looks, drop ≤ {max_drop} points; confidence 0.95"
        return RunRecord(model_name="locked", build_key=key, evidence={}, params={}, metrics={},
                         tags={"build_key": key, "gate.verdict": verdict, "gate.plan": plan}, description="# card")

    failed = log_build_run(judged("d" * 64, "fail", 1), uri, root)
    with pytest.raises(GateFailed, match=f"failed its gate under plan .*drop ≤ 1 points.*{failed.run_id}.*nothing is "
                                         "registered"):
        log_build_run(judged("d" * 64, "pass", 100), uri, root)
    again = log_build_run(judged("d" * 64, "inconclusive", 1), uri, root)  # its own plan: judged as before
    assert again.run_id != failed.run_id and again.version is None
    assert log_build_run(judged("e" * 64, "pass", 100), uri, root).version is None  # another key: nothing held
