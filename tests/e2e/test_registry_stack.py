"""The production registry for real: `enginewright stack up` starts SeaweedFS (S3), databases in the machine's
PostgreSQL, an MLflow server on them and a Prefect server; bundles are uploaded to S3 directly, verified,
registered through the MLflow server, pulled back and verified. No doubles."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from enginewright.bundle.bundle_store import bundle_location, store_bundle
from enginewright.bundle.manifest import MANIFEST_NAME, verify_bundle, write_manifest
from enginewright.bundle.s3 import S3Location, list_objects, verify_object
from enginewright.config.settings import MiB, Settings, TransferSettings
from enginewright.errors import UploadError
from enginewright.registry.registry_client import registry_client
from enginewright.stack.servers import Stack
from tasks.register import RunRecord, register_version

pytestmark = pytest.mark.e2e

SMALL_PARTS = TransferSettings(part_size=5 * MiB, concurrency=4)  # multipart with several parts on small files


def client_settings(stack: Stack, home: Path) -> Settings:
    env = stack.client_env()
    return Settings(home=home, mlflow_tracking_uri=env["ENGINEWRIGHT_MLFLOW_TRACKING_URI"],
                    bundle_store=env["ENGINEWRIGHT_BUNDLE_STORE"], s3_endpoint_url=env["ENGINEWRIGHT_S3_ENDPOINT_URL"])


def s3(stack: Stack):
    """A client with this stack's keys (explicit: boto3's default session would keep the first keys it saw)."""
    return boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=stack.secrets["s3_access_key"],
                        aws_secret_access_key=stack.secrets["s3_secret_key"], region_name="us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def make_bundle(root: Path, big_mb: int = 12) -> tuple[Path, dict]:
    """A bundle-shaped directory: a multi-part 'weights' file, small config files, a manifest."""
    bundle = root / "bundle"
    (bundle / "checkpoint").mkdir(parents=True)
    (bundle / "checkpoint" / "model.safetensors").write_bytes(os.urandom(big_mb * MiB + 12345))
    (bundle / "checkpoint" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (bundle / "llm_api.yaml").write_text("max_batch_size: 8\n")
    (bundle / "empty.txt").write_bytes(b"")
    key = uuid.uuid4().hex + uuid.uuid4().hex
    manifest = write_manifest(bundle, {"bundle_id": key, "build_key": {"digest": key, "parts": {}}})
    return bundle, manifest


def record_for(name: str, key: str) -> RunRecord:
    return RunRecord(model_name=name, build_key=key, evidence={}, params={}, metrics={},
                     tags={"build_key": key, "quantization.format": "fp8", "gate.verdict": "pass"},
                     description=f"# {name}\nmodel card")


def test_stack_reports_every_component_up(stack: Stack) -> None:
    rows = {name: state for name, _, state in stack.status()}
    assert rows.keys() == {"s3", "mlflow", "prefect", "relay", "postgres"}
    assert all(state.startswith("up") for state in rows.values()), rows
    assert (stack.dir / "env").stat().st_mode & 0o777 == 0o600
    assert (stack.dir / "secrets.json").stat().st_mode & 0o777 == 0o600
    auth_config = stack.dir / "mlflow-auth.ini"  # the session stack runs MLflow with basic auth
    assert auth_config.stat().st_mode & 0o777 == 0o600
    assert stack.secrets["mlflow_admin_password"] not in auth_config.read_text()  # it reaches MLflow by environment


def test_upload_stores_every_object_with_its_sha256_and_the_manifest_last(stack: Stack, tmp_path: Path) -> None:
    bundle, manifest = make_bundle(tmp_path)
    uri = f"s3://{stack.settings.stack_bucket}/bundles/{manifest['bundle_id']}/run-a"
    assert store_bundle(bundle, manifest, uri, stack.s3_url, SMALL_PARTS) == uri

    client = s3(stack)
    stored = dict(list_objects(client, S3Location.parse(uri)))
    assert stored == {f["path"]: f["size"] for f in manifest["files"]} | {MANIFEST_NAME: (bundle / MANIFEST_NAME).stat().st_size}
    big = client.head_object(Bucket=stack.settings.stack_bucket, Key=f"{S3Location.parse(uri).key}/checkpoint/model.safetensors",
                             ChecksumMode="ENABLED")
    assert big["ChecksumSHA256"].endswith("-3")  # 12 MiB + change in 5 MiB parts: a composite of three digests
    entry = next(f for f in manifest["files"] if f["path"] == "checkpoint/model.safetensors")
    assert big["Metadata"]["sha256"] == entry["sha256"]


def test_the_store_refuses_a_part_whose_bytes_do_not_match_its_sha256(stack: Stack) -> None:
    import base64
    import hashlib

    from botocore.exceptions import ClientError

    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(ClientError, match="BadDigest"):
        s3(stack).put_object(Bucket=stack.settings.stack_bucket, Key="probe/x", Body=b"these bytes", ChecksumSHA256=wrong)


def test_verification_catches_an_object_replaced_after_upload(stack: Stack, tmp_path: Path) -> None:
    bundle, manifest = make_bundle(tmp_path, big_mb=6)
    uri = f"s3://{stack.settings.stack_bucket}/bundles/{manifest['bundle_id']}/run-b"
    store_bundle(bundle, manifest, uri, stack.s3_url, SMALL_PARTS)
    target = S3Location.parse(uri).child("llm_api.yaml")
    entry = next(f for f in manifest["files"] if f["path"] == "llm_api.yaml")
    client = s3(stack)
    client.put_object(Bucket=target.bucket, Key=target.key, Body=b"max_batch_size: 9\n", ChecksumAlgorithm="SHA256")
    import base64
    import hashlib

    ours = base64.b64encode(hashlib.sha256((bundle / "llm_api.yaml").read_bytes()).digest()).decode()
    with pytest.raises(UploadError, match="differs from ours"):
        verify_object(client, target, entry["size"], entry["sha256"], ours)


def test_a_file_changed_after_its_manifest_is_not_kept_and_nothing_is_left_open(stack: Stack, tmp_path: Path) -> None:
    bundle, manifest = make_bundle(tmp_path)
    weights = bundle / "checkpoint" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.seek(7 * MiB)
        handle.write(b"\x00" * 16)
    uri = f"s3://{stack.settings.stack_bucket}/bundles/{manifest['bundle_id']}/run-c"
    with pytest.raises(UploadError, match="changed since its manifest was written"):
        store_bundle(bundle, manifest, uri, stack.s3_url, SMALL_PARTS)
    client = s3(stack)
    assert list_objects(client, S3Location.parse(uri)) == []  # nothing of the batch kept, no manifest
    open_uploads = client.list_multipart_uploads(Bucket=stack.settings.stack_bucket, Prefix=S3Location.parse(uri).key)
    assert open_uploads.get("Uploads", []) == []


def test_register_and_pull_through_the_mlflow_server(stack: Stack, tmp_path: Path, capsys, monkeypatch) -> None:
    from enginewright.cli.main import main

    settings = client_settings(stack, tmp_path / "home")
    bundle, manifest = make_bundle(tmp_path)
    key = manifest["bundle_id"]
    mlflow = registry_client(settings.tracking_uri)
    run_id = mlflow.create_run(mlflow.create_experiment(f"exp-{key[:8]}")).info.run_id
    uri = store_bundle(bundle, manifest, bundle_location(settings.bundle_root, key, run_id), settings.s3_endpoint_url,
                       settings.transfer)
    registered = register_version(record_for("stack-model", key), run_id, uri, True, settings.tracking_uri)
    assert registered.created and registered.aliases == ["candidate"] and registered.source == uri

    version = mlflow.get_model_version("stack-model", registered.version)
    assert version.source == uri and uri.startswith("s3://ewtest/bundles/")
    assert version.tags["build_key"] == key and version.tags["bundle.uri"] == uri
    assert version.description.startswith("**Evidence:**") and "\n\n# stack-model" in version.description

    for name, value in stack.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    assert main(["pull", "models:/stack-model@candidate", str(tmp_path / "pulled")]) == 0
    assert verify_bundle(tmp_path / "pulled")["bundle_id"] == key
    assert "4 files verified" in capsys.readouterr().out

    # A damaged object in the store: pull refuses with the file's name and leaves nothing behind.
    target = S3Location.parse(uri).child("checkpoint/config.json")
    s3(stack).put_object(Bucket=target.bucket, Key=target.key, Body=b'{"architectures": ["Evil"]}')
    assert main(["pull", "models:/stack-model@candidate", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "failed verification: bundle file checkpoint/config.json has" in err
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))


def _register_concurrently(settings_fields: dict, bundle: str, manifest: dict, run_id: str, barrier, results) -> None:
    settings = Settings(**settings_fields)
    from enginewright.bundle.bundle_store import delete_bundle

    uri = store_bundle(Path(bundle), manifest, bundle_location(settings.bundle_root, manifest["bundle_id"], run_id),
                       settings.s3_endpoint_url, SMALL_PARTS)
    barrier.wait()
    registered = register_version(record_for("raced-model", manifest["bundle_id"]), run_id, uri, True,
                                  settings.tracking_uri,
                                  discard_bundle=lambda u: delete_bundle(u, settings.s3_endpoint_url))
    results.put((run_id, registered.version, registered.created, registered.source))


def test_processes_registering_the_same_key_at_once_make_one_version(stack: Stack, tmp_path: Path) -> None:
    settings = client_settings(stack, tmp_path / "home")
    bundle, manifest = make_bundle(tmp_path, big_mb=6)
    mlflow = registry_client(settings.tracking_uri)
    experiment = mlflow.create_experiment(f"race-{manifest['bundle_id'][:8]}")
    runs = [mlflow.create_run(experiment).info.run_id for _ in range(4)]
    fields = {"home": str(settings.home), "mlflow_tracking_uri": settings.tracking_uri,
              "bundle_store": settings.bundle_root, "s3_endpoint_url": settings.s3_endpoint_url}
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(runs)), context.Queue()
    workers = [context.Process(target=_register_concurrently,
                               args=(fields, str(bundle), manifest, run_id, barrier, results)) for run_id in runs]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    versions = mlflow.search_model_versions(f"name = 'raced-model' and tags.build_key = '{manifest['bundle_id']}'")
    assert len(versions) == 1
    (winner,) = versions
    assert {version for _, version, _, _ in outcomes} == {str(winner.version)}
    assert sum(created for _, _, created, _ in outcomes) == 1
    assert mlflow.get_model_version_by_alias("raced-model", "candidate").version == winner.version
    # The losers deleted their copies; only the winner's bundle is stored.
    prefix = S3Location.parse(settings.bundle_root).child(manifest["bundle_id"])
    stored_runs = {key.split("/", 1)[0] for key, _ in list_objects(s3(stack), prefix)}
    assert stored_runs == {winner.run_id}


def test_data_survives_a_restart_and_down_stops_only_what_it_started(stack: Stack, tmp_path: Path) -> None:
    settings = client_settings(stack, tmp_path / "home")
    mlflow = registry_client(settings.tracking_uri)
    before = {(v.name, str(v.version), v.source) for v in mlflow.search_model_versions("")}
    assert before
    stack.down(say=lambda line: None)
    states = {name: state for name, _, state in stack.status()}
    assert {states[name] for name in ("s3", "mlflow", "prefect", "relay")} == {"stopped"}
    assert states["postgres"].startswith("up")  # PostgreSQL was not started by the stack, so it keeps running
    stack.up(say=lambda line: None)
    after = {(v.name, str(v.version), v.source) for v in mlflow.search_model_versions("")}
    assert after == before
    pulled = tmp_path / "after-restart"
    from enginewright.bundle.bundle_store import fetch_bundle

    source = mlflow.get_model_version_by_alias("raced-model", "candidate").source
    fetch_bundle(source, pulled, settings.s3_endpoint_url, settings.transfer, settings.tracking_uri)
    assert verify_bundle(pulled)


def test_the_build_flow_in_production_mode_uploads_to_s3_and_registers_through_the_server(
    stack: Stack, tiny_model: Path, shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    from enginewright.config.spec import build_spec
    from flows.build import run_build

    for name, value in stack.client_env().items():
        if name != "PREFECT_API_URL":  # the flow itself runs on Prefect's ephemeral API here
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    settings = Settings()
    spec = build_spec(settings, None, {
        "source": {"model": str(tiny_model)},
        "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 2, "seq_len": 16},
        "evaluation": {"tasks": ["arc_easy"], "limit": 2},
        "gate": {"max_drop_points": 100, "smoke": False},
        "registry": {"model_name": "tiny-on-stack"},
    })
    outcome = run_build(spec, settings).result()
    assert outcome.registered_now and outcome.registered.source.startswith("s3://ewtest/bundles/")
    mlflow = registry_client(settings.tracking_uri)
    version = mlflow.get_model_version("tiny-on-stack", outcome.registered.version)
    assert version.tags["build_key"] == outcome.build_key and version.tags["gate.verdict"] == "pass"
    run_tags = mlflow.get_run(version.run_id).data.tags  # the lineage is on the run; the version has headlines
    assert {"tools.modelopt", "gpu.arch", "calibration.fingerprint", "gate.arc_easy.candidate"} <= run_tags.keys()
    # The bundle went to S3 directly: the run's artifacts (served by MLflow) hold only the evidence.
    artifacts = {a.path for a in mlflow.list_artifacts(version.run_id)}
    assert artifacts == {"evaluation", "gate"}
    pulled = tmp_path / "pulled"
    from enginewright.bundle.bundle_store import fetch_bundle

    manifest = fetch_bundle(version.source, pulled, settings.s3_endpoint_url, settings.transfer, settings.tracking_uri)
    assert manifest["build_key"]["digest"] == outcome.build_key


def test_the_store_and_the_registry_are_checked_before_any_work(stack: Stack, tmp_path: Path, monkeypatch) -> None:
    """A bucket that does not exist or credentials the store refuses: one line in seconds, before calibration."""
    import time

    from enginewright.errors import InputError
    from tasks.preflight import check_stores

    for name, value in stack.client_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    check_stores(settings)  # the stack's own store and MLflow server: fine
    monkeypatch.setenv("ENGINEWRIGHT_BUNDLE_STORE", "s3://no-such-bucket-here/bundles")
    started = time.monotonic()
    with pytest.raises(InputError, match="bucket 'no-such-bucket-here' does not exist at S3 at http"):
        check_stores(Settings())
    monkeypatch.setenv("ENGINEWRIGHT_BUNDLE_STORE", f"s3://{stack.settings.stack_bucket}/bundles")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(InputError, match="refuses these credentials"):
        check_stores(Settings())
    assert time.monotonic() - started < 20


def test_a_checkpoint_in_s3_builds_at_the_revision_the_watcher_announces(
    stack: Stack, tiny_model: Path, shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """A watched `s3://` prefix was announced but could not be built. Now resolve downloads it once per revision,
    and its revision is the watcher's: the announced revision is the one that is built."""
    from enginewright.config.spec import build_spec
    from flows.build import run_build
    from tasks.checkpoint_sources import source_context
    from tasks.revisions import latest_revision
    from tasks.sources import resolve_source

    for name, value in stack.client_env().items():
        if name != "PREFECT_API_URL":  # the flow itself runs on Prefect's ephemeral API here
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    settings = Settings()
    prefix = f"s3://{stack.settings.stack_bucket}/checkpoints/tiny-{tmp_path.name}"
    client = s3(stack)
    for path in sorted(tiny_model.iterdir()):
        client.upload_file(str(path), stack.settings.stack_bucket, f"{S3Location.parse(prefix).key}/{path.name}")

    announced = latest_revision(prefix, None, settings.s3_endpoint_url)
    spec = build_spec(settings, None, {
        "source": {"model": prefix},
        "calibration": {"source": str(shared_data / "calib" / "tiny_shakespeare.txt"), "num_samples": 2, "seq_len": 16},
        "evaluation": {"tasks": ["arc_easy"], "limit": 2},
        "gate": {"max_drop_points": 100, "smoke": False},
        "registry": {"model_name": "tiny-from-s3"},
    })
    resolved = resolve_source(spec.source, source_context(settings))
    assert resolved.kind == "s3" and announced == f"s3:{resolved.revision}"
    assert sorted(p.name for p in resolved.path.iterdir()) == sorted(p.name for p in tiny_model.iterdir())

    outcome = run_build(spec, settings).result()
    registry = registry_client(settings.tracking_uri)
    run_tags = registry.get_run(registry.get_model_version("tiny-from-s3", outcome.registered.version).run_id).data.tags
    assert run_tags["source.kind"] == "s3" and run_tags["source.revision"] == resolved.revision

    # A changed object is a new revision, announced and resolved alike.
    client.put_object(Bucket=stack.settings.stack_bucket, Key=f"{S3Location.parse(prefix).key}/README.md", Body=b"v2")
    assert latest_revision(prefix, None, settings.s3_endpoint_url) != announced
    assert resolve_source(spec.source, source_context(settings)).revision != resolved.revision
