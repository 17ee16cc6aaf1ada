"""Bundle upload throughput against a local SeaweedFS: our direct, verified upload vs plain boto3 vs MLflow's proxy.

Starts a private stack (SeaweedFS, an MLflow server with `--artifacts-destination s3://…`, databases in the
local PostgreSQL) in a temporary home, writes bundle-shaped directories of random bytes (weights in shards of
at most 512 MiB, plus small config files), and uploads each, in one run, six ways:

- ours:   `enginewright.bundle.bundle_store.store_bundle` — boto3's transfer manager (every file at once, parallel
          parts, each part's sha256 checked by the store), our own read of each file beside it (its sha256 against
          the manifest, its part digests), every object's checksum compared after upload (included in the time);
- previous: the hand-written multipart uploader `store_bundle` used before (benchmarks/previous_s3_uploader.py),
          with the same verification, on the same bytes;
- boto3:  `client.upload_file` per file, one after another, with boto3's default TransferConfig;
- boto3-sha256: the same with `ChecksumAlgorithm=SHA256`: the store checks each part's sha256 as it does
          for ours (boto3's default is CRC32), without our post-upload verification;
- proxied: `MlflowClient.log_artifacts` to a run whose artifacts the MLflow server proxies to the same S3,
           every byte streamed through the server (`MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false`);
- mlflow:  the same call with MLflow 3.17's defaults: large files via presigned multipart URLs, direct to S3.

The order rotates per size and repeat; objects are deleted between uploads. Prints the median MB/s and ratios.

    .venv/bin/python benchmarks/upload_throughput.py --sizes-mb 100,500,2048
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

SHARD = 512 * 1024 * 1024


def make_bundle(root: Path, total_mb: int) -> tuple[Path, dict]:
    from enginewright.bundle.manifest import write_manifest

    bundle = root / f"bundle-{total_mb}"
    (bundle / "checkpoint").mkdir(parents=True)
    remaining, index = total_mb * 1024 * 1024, 0
    while remaining > 0:
        size = min(SHARD, remaining)
        with (bundle / "checkpoint" / f"model-{index:05d}.safetensors").open("wb") as handle:
            for _ in range(0, size, 64 * 1024 * 1024):
                handle.write(os.urandom(min(64 * 1024 * 1024, size - handle.tell())))
        remaining, index = remaining - size, index + 1
    for name in ("config.json", "generation_config.json", "hf_quant_config.json", "tokenizer.json"):
        (bundle / "checkpoint" / name).write_bytes(os.urandom(random.randint(200, 2_000_000)))
    (bundle / "llm_api.yaml").write_text("max_batch_size: 8\n")
    key = uuid.uuid4().hex * 2
    return bundle, write_manifest(bundle, {"bundle_id": key, "build_key": {"digest": key, "parts": {}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="100,500,2048")
    parser.add_argument("--part-size-mb", type=int, default=None, help="our part size [default: the setting's]")
    parser.add_argument("--concurrency", type=int, default=None, help="our parallel parts [default: the setting's]")
    parser.add_argument("--skip-proxied", action="store_true", help="compare with plain boto3 only")
    parser.add_argument("--repeat", type=int, default=1, help="upload each bundle this many times per method")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    from enginewright.bundle.bundle_store import store_bundle
    from enginewright.bundle.s3 import S3Location, delete_prefix, s3_client
    from enginewright.config.settings import MiB, Settings, TransferSettings
    from enginewright.stack.servers import Stack, port_in_use

    base = next(p for p in range(21000, 40000, 20) if not any(port_in_use(p + i) for i in range(12)))
    home = Path(tempfile.mkdtemp(prefix="enginewright-upload-bench-"))
    settings = Settings(home=home / "home", stack_s3_port=base, stack_mlflow_port=base + 10,
                        stack_prefect_port=base + 11, stack_name=f"ewbench_{uuid.uuid4().hex[:6]}",
                        stack_bucket="ewbench")
    defaults = settings.transfer
    transfer = TransferSettings(part_size=(args.part_size_mb * MiB) if args.part_size_mb else defaults.part_size,
                                concurrency=args.concurrency or defaults.concurrency)
    stack = Stack(settings)
    print(f"starting a private stack in {home} …", flush=True)
    stack.up(say=lambda line: None)
    os.environ.update({k: v for k, v in stack.client_env().items() if k.startswith("AWS_") or k.startswith("MLFLOW_S3")})
    try:
        client = s3_client(stack.s3_url)
        mlflow = MlflowClient(tracking_uri=stack.mlflow_url)
        experiment = mlflow.create_experiment("upload-benchmark")
        bucket = settings.stack_bucket

        def ours(bundle: Path, manifest: dict) -> None:
            store_bundle(bundle, manifest, f"s3://{bucket}/bench/ours", stack.s3_url, transfer)

        def previous(bundle: Path, manifest: dict) -> None:
            from previous_s3_uploader import (
                upload_verified_previous,  # this folder is on sys.path (common.py)
            )

            from enginewright.bundle.manifest import MANIFEST_NAME, safe_relative_path
            from enginewright.bundle.s3 import UploadItem
            from enginewright.keys.hashing import sha256_file

            target = S3Location(bucket, "bench/previous")
            items = [UploadItem(bundle / safe_relative_path(f["path"]), target.child(f["path"]), f["size"],
                                f["sha256"]) for f in manifest["files"]]
            path = bundle / MANIFEST_NAME
            last = UploadItem(path, target.child(MANIFEST_NAME), path.stat().st_size, sha256_file(path))
            boto = s3_client(stack.s3_url, transfer.concurrency, attempts=transfer.attempts)
            for batch in (items, [last]):  # as store_bundle did: the manifest last
                upload_verified_previous(boto, batch, transfer)

        def boto3_plain(bundle: Path, manifest: dict) -> None:
            for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, f"bench/boto3/{path.relative_to(bundle).as_posix()}")

        def boto3_sha256(bundle: Path, manifest: dict) -> None:
            for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, f"bench/boto3s/{path.relative_to(bundle).as_posix()}",
                                   ExtraArgs={"ChecksumAlgorithm": "SHA256"})

        def mlflow_log_artifacts(bundle: Path, manifest: dict) -> None:
            run = mlflow.create_run(experiment)
            mlflow.log_artifacts(run.info.run_id, str(bundle), "bundle")
            mlflow.set_terminated(run.info.run_id)

        def proxied(bundle: Path, manifest: dict) -> None:
            os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "false"  # every byte through the server
            try:
                mlflow_log_artifacts(bundle, manifest)
            finally:
                del os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"]

        methods = {"ours": ours, "previous": previous, "boto3": boto3_plain, "boto3-sha256": boto3_sha256}
        if not args.skip_proxied:
            methods["proxied"] = proxied
            # MLflow 3.17's default: files ≥ MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE go to S3 through presigned
            # multipart URLs the server hands out (bytes bypass the server); smaller files stream through it.
            methods["mlflow"] = mlflow_log_artifacts
        rows = []
        for turn, size_mb in enumerate(int(s) for s in args.sizes_mb.split(",")):
            bundle, manifest = make_bundle(home, size_mb)
            files = [p for p in bundle.rglob("*") if p.is_file()]
            total = sum(p.stat().st_size for p in files)
            names = list(methods)
            timings: dict[str, list[float]] = {name: [] for name in names}
            for attempt in range(args.repeat):
                shift = (turn + attempt) % len(names)
                order = names[shift:] + names[:shift]
                for name in order:
                    start = time.perf_counter()
                    methods[name](bundle, manifest)
                    timings[name].append(time.perf_counter() - start)
                    delete_prefix(client, S3Location(bucket, "bench"))
                    delete_prefix(client, S3Location(bucket, "mlflow"))
                    print(f"  {size_mb} MB {name}: {timings[name][-1]:.1f} s", flush=True)
            seconds = {name: statistics.median(values) for name, values in timings.items()}
            rows.append((size_mb, len(files), total, seconds, order if args.repeat == 1 else ["rotated"]))
            for path in sorted(bundle.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
    finally:
        stack.down(purge=True, say=lambda line: None)

    print(f"\nours and previous: part size {transfer.part_size // MiB} MiB, {transfer.concurrency} parallel parts; "
          "boto3: upload_file defaults (8 MiB parts, 10 threads), files one after another\n")
    names = list(rows[0][3])
    header = f"{'bundle':>8} {'files':>6}" + "".join(f"{n + ' MB/s':>19}" for n in names) + \
        "".join(f"{'ours/' + n:>19}" for n in names if n != "ours") + "  order"
    print(header)
    print("-" * len(header))
    for size_mb, count, total, seconds, order in rows:
        rate = {name: total / 1e6 / s for name, s in seconds.items()}
        print(f"{size_mb:>6}MB {count:>6}" + "".join(f"{rate[n]:>19.1f}" for n in names)
              + "".join(f"{rate['ours'] / rate[n]:>19.2f}" for n in names if n != "ours") + f"  {' → '.join(order)}")


if __name__ == "__main__":
    main()
