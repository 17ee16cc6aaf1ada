"""Faults against the real stack (SeaweedFS, MLflow and Prefect servers, the machine's PostgreSQL): a store
killed mid-upload, a store whose disk is full, MLflow down at registration, PostgreSQL restarted while versions
are being registered. Nothing may be half-registered, and a rerun completes with exactly one version per build
key."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow

from enginewright.bundle.manifest import MANIFEST_NAME
from enginewright.bundle.s3 import S3Location, list_objects
from enginewright.config.settings import MiB, Settings, TransferSettings
from enginewright.errors import RegistryError, StoreError
from enginewright.stack.servers import Stack
from tasks.register import LoggedRun, log_build_run, register_task, store_bundle_task
from tests.e2e.test_registry_stack import client_settings, make_bundle, record_for, s3

pytestmark = pytest.mark.e2e
SMALL_PARTS = TransferSettings(part_size=5 * MiB, concurrency=2)


def stored_keys(stack: Stack, uri: str) -> set[str]:
    return {key for key, _ in list_objects(s3(stack), S3Location.parse(uri))}


@flow(name="store-bundle-under-test")
def store_flow(bundle: Path, manifest: dict, uri: str, endpoint: str) -> str:
    """The real task with its retries; `refresh_cache` so every call stores (the test's point), as a first build."""
    run_id = uri.rsplit("/", 1)[-1]
    root = uri.removesuffix(f"/{manifest['bundle_id']}/{run_id}")  # the task puts it at <root>/<bundle id>/<run id>
    return store_bundle_task.with_options(refresh_cache=True)(bundle, manifest, LoggedRun(run_id, None), root,
                                                               endpoint, SMALL_PARTS)


def test_s3_killed_mid_upload_leaves_no_manifest_and_a_rerun_with_retries_completes(stack: Stack,
                                                                                    tmp_path: Path) -> None:
    bundle, manifest = make_bundle(tmp_path, big_mb=400)
    uri = f"s3://{stack.settings.stack_bucket}/bundles/{manifest['bundle_id']}/run-killed"
    failure: list[BaseException] = []

    def upload():
        from enginewright.bundle.bundle_store import store_bundle

        try:
            store_bundle(bundle, manifest, uri, stack.s3_url, SMALL_PARTS)
        except BaseException as exc:  # noqa: BLE001 (the failure is what is under test)
            failure.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(1.5)  # some parts are in
    stack.down(only={"s3"}, kill=True, say=lambda line: None)
    uploader.join(timeout=300)
    assert failure, "the upload finished although the store was killed under it"
    assert isinstance(failure[0], StoreError), failure[0]  # one line, naming the store and the step
    assert str(failure[0]).startswith(f"S3 at {stack.s3_url} failed to store the bundle at {uri}: ")
    stack.up(only={"s3"}, say=lambda line: None)
    assert MANIFEST_NAME not in stored_keys(stack, uri)  # an interrupted upload is never a bundle

    # The task's retries ride out an outage: the store is down when the run starts and back 3 s later.
    stack.down(only={"s3"}, kill=True, say=lambda line: None)
    threading.Timer(3, lambda: stack.up(only={"s3"}, say=lambda line: None)).start()
    assert store_flow(bundle, manifest, uri, stack.s3_url) == uri
    assert stored_keys(stack, uri) == {f["path"] for f in manifest["files"]} | {MANIFEST_NAME}
    # The upload the kill left open (its abort could not reach the store) was aborted by the rerun, not leaked.
    location = S3Location.parse(uri)
    left_open = s3(stack).list_multipart_uploads(Bucket=location.bucket, Prefix=location.key).get("Uploads", [])
    assert left_open == [], left_open


def test_a_store_out_of_disk_fails_the_upload_in_one_line_and_takes_it_once_space_is_back(tmp_path: Path) -> None:
    """A SeaweedFS of its own, its data on a 64 MB tmpfs filled up to the last 256 KiB (mounting needs root, which
    this machine and CI have): the store answers InternalError, boto3 retries, then one StoreError line; no
    manifest is stored. With the filler removed the same upload completes and verifies."""
    from enginewright.bundle.bundle_store import store_bundle
    from tests.e2e.conftest import free_port_block, wait_for

    port = free_port_block(13)
    settings = Settings(home=tmp_path / "home", stack_s3_port=port, stack_mlflow_port=port + 10,
                        stack_prefect_port=port + 11, stack_relay_port=port + 12,
                        stack_name=f"ewfull_{uuid.uuid4().hex[:8]}", stack_bucket="full")
    small = Stack(settings)
    data = small.dir / "s3"
    data.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(data)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"cannot mount a small tmpfs here: {mounted.stderr}"
    try:
        small.up(only={"s3"}, say=lambda line: None)
        filler = data / "filler"
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        with filler.open("wb") as handle:
            handle.write(b"\0" * (free - 256 * 1024))
        bundle, manifest = make_bundle(tmp_path, big_mb=4)
        uri = f"s3://full/bundles/{manifest['bundle_id']}/run-1"
        client_env = small.client_env()
        with pytest.MonkeyPatch.context() as env:
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                env.setenv(key, client_env[key])
            with pytest.raises(StoreError) as refused:
                store_bundle(bundle, manifest, uri, small.s3_url, SMALL_PARTS)
            line = str(refused.value)
            assert "\n" not in line and line.startswith(f"S3 at {small.s3_url} failed to store the bundle at {uri}: ")
            assert MANIFEST_NAME not in {key for key, _ in list_objects(s3(small), S3Location.parse(uri))}

            # Space back: SeaweedFS takes writes again within about half a minute (its volume servers report
            # free space on their heartbeat); a rerun of the store step, as the task's retries or a rerun do, completes.
            filler.unlink()

            def stored() -> bool:
                try:
                    assert store_bundle(bundle, manifest, uri, small.s3_url, SMALL_PARTS) == uri
                    return True
                except StoreError:
                    return False

            wait_for(stored, 180, "the store to take writes again after space was freed")
            stored = {key for key, _ in list_objects(s3(small), S3Location.parse(uri))}
            assert stored == {f["path"] for f in manifest["files"]} | {MANIFEST_NAME}
    finally:
        small.down(purge=True, say=lambda line: None)
        subprocess.run(["umount", str(data)], check=False)


@flow(name="register-under-test")
def register_flow(record, run_id: str, uri: str, tracking_uri: str):
    return register_task.with_options(refresh_cache=True)(record, run_id, uri, True, tracking_uri, None)


def test_mlflow_down_at_registration_fails_clearly_and_a_rerun_registers_one_version(
        stack: Stack, tmp_path: Path, monkeypatch) -> None:
    from enginewright.bundle.bundle_store import store_bundle

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # MLflow's own client retries, kept short here
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = client_settings(stack, tmp_path / "home")
    bundle, manifest = make_bundle(tmp_path, big_mb=6)
    record = record_for("outage-model", manifest["bundle_id"])
    run = log_build_run(record, settings.tracking_uri, settings.artifact_root)
    uri = store_bundle(bundle, manifest, f"{settings.bundle_root}/{record.build_key}/{run.run_id}",
                       stack.s3_url, SMALL_PARTS)
    stack.down(only={"mlflow"}, kill=True, say=lambda line: None)
    try:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=rf"MLflow at {settings.tracking_uri} failed to register a version of "
                                                r"'outage-model': .*(Connection refused|Max retries)"):
            register_flow(record, run.run_id, uri, settings.tracking_uri)
        assert time.monotonic() - started >= 20  # two task retries, 10 s apart, before giving up
    finally:
        stack.up(only={"mlflow"}, say=lambda line: None)
    first = register_flow(record, run.run_id, uri, settings.tracking_uri)
    again = register_flow(record, run.run_id, uri, settings.tracking_uri)
    assert first.created and not again.created and again.version == first.version
    from enginewright.registry.registry_client import registry_client

    versions = registry_client(settings.tracking_uri).search_model_versions("name = 'outage-model'")
    assert [str(v.version) for v in versions] == [first.version]


def test_postgresql_restarted_while_versions_are_registered_loses_and_doubles_nothing(
        stack: Stack, tmp_path: Path) -> None:
    """The machine's own PostgreSQL (MLflow's and Prefect's store) restarts in the middle of a series of
    registrations; MLflow's client retries what failed, and each build key still ends with one version."""
    from tests.registered_bundle import register_bundle

    settings = client_settings(stack, tmp_path / "home")
    cluster = sorted(os.listdir("/etc/postgresql"))[-1]
    restart = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"]
    restarted: list[subprocess.CompletedProcess] = []
    threading.Timer(2, lambda: restarted.append(subprocess.run(restart, capture_output=True, text=True))).start()
    registered = [register_bundle(settings, tmp_path / "b", "through-restart", fmt="fp8") for _ in range(12)]
    assert restarted and restarted[0].returncode == 0, restarted
    from enginewright.registry.registry_client import registry_client

    versions = registry_client(settings.tracking_uri).search_model_versions("name = 'through-restart'")
    assert sorted(int(v.version) for v in versions) == sorted(int(r.version) for r in registered)
    assert len({v.tags["build_key"] for v in versions}) == len(registered) == 12


def test_a_store_refusing_the_deployer_fails_the_deploy_run_without_refusing_the_version(
        stack: Stack, tmp_path: Path, monkeypatch) -> None:
    """The deployer's S3 key is wrong (the store answers 403 at once): the deploy run fails with one line naming
    the store, the version is not marked refused (the bundle is fine), and nothing is left in the serving tree."""
    from enginewright.registry.registry_client import registry_client
    from flows.deploy import deploy_version
    from tests.registered_bundle import register_bundle

    settings = client_settings(stack, tmp_path / "home")
    version = register_bundle(settings, tmp_path / "b", "store-refuses", fmt="fp8")
    for key, value in {"ENGINEWRIGHT_HOME": str(settings.home), "ENGINEWRIGHT_MLFLOW_TRACKING_URI": settings.tracking_uri,
                       "ENGINEWRIGHT_S3_ENDPOINT_URL": stack.s3_url, "AWS_SECRET_ACCESS_KEY": "not-the-key"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreError, match=rf"^S3 at {stack.s3_url} failed to download {version.source}: An error "
                                         r"occurred \((SignatureDoesNotMatch|AccessDenied)\)"):
        deploy_version("store-refuses", version.version, target_path=None)
    tags = registry_client(settings.tracking_uri).get_model_version("store-refuses", version.version).tags
    assert "deploy.h100.status" not in tags
    serving = settings.serving_dir / "h100" / "store-refuses"
    assert not (serving / "current").exists() and not any((serving / "bundles").glob("*"))
