"""Bundle upload throughput against a local SeaweedFS: our direct, verified upload vs plain boto3 vs MLflow's proxy.

Starts a private stack (SeaweedFS, an MLflow server with `--artifacts-destination s3://…`, databases in the
local PostgreSQL) in a temporary home, writes bundle-shaped directories of random bytes (weights in shards of
at most 512 MiB, plus small config files), and uploads each, in one run, three ways:

- ours:   `enginewright.bundle_store.store_bundle` — parallel multipart, every part's sha256 checked by the
          store, every object's composite checksum compared after upload (verification included in the time);
- boto3:  `client.upload_file` per file, one after another, with boto3's default TransferConfig;
- proxied: `MlflowClient.log_artifacts` to a run whose artifacts the MLflow server proxies to the same S3.

The order of the three rotates per size; objects are deleted between uploads. Prints MB/s and the ratios.

    .venv/bin/python benchmarks/upload_throughput.py --sizes-mb 100,500,2048
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

SHARD = 512 * 1024 * 1024


def make_bundle(root: Path, total_mb: int) -> tuple[Path, dict]:
    from enginewright.manifest import write_manifest

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
    parser.add_argument("--skip-proxied", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    from enginewright.bundle_store import store_bundle
    from enginewright.s3 import MiB, S3Location, TransferSettings, delete_prefix, s3_client
    from enginewright.settings import Settings
    from enginewright.stack import Stack, port_in_use

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

        def boto3_plain(bundle: Path, manifest: dict) -> None:
            for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, f"bench/boto3/{path.relative_to(bundle).as_posix()}")

        def proxied(bundle: Path, manifest: dict) -> None:
            run = mlflow.create_run(experiment)
            mlflow.log_artifacts(run.info.run_id, str(bundle), "bundle")
            mlflow.set_terminated(run.info.run_id)

        methods = {"ours": ours, "boto3": boto3_plain}
        if not args.skip_proxied:
            methods["proxied"] = proxied
        rows = []
        for turn, size_mb in enumerate(int(s) for s in args.sizes_mb.split(",")):
            bundle, manifest = make_bundle(home, size_mb)
            files = [p for p in bundle.rglob("*") if p.is_file()]
            total = sum(p.stat().st_size for p in files)
            names = list(methods)
            order = names[turn % len(names):] + names[:turn % len(names)]
            seconds = {}
            for name in order:
                start = time.perf_counter()
                methods[name](bundle, manifest)
                seconds[name] = time.perf_counter() - start
                delete_prefix(client, S3Location(bucket, "bench"))
                delete_prefix(client, S3Location(bucket, "mlflow"))
                print(f"  {size_mb} MB {name}: {seconds[name]:.1f} s", flush=True)
            rows.append((size_mb, len(files), total, seconds, order))
            for path in sorted(bundle.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
    finally:
        stack.down(purge=True, say=lambda line: None)

    print(f"\nours: part size {transfer.part_size // MiB} MiB, {transfer.concurrency} parallel parts; "
          "boto3: upload_file defaults (8 MiB parts, 10 threads), files one after another\n")
    header = f"{'bundle':>8} {'files':>6} {'ours MB/s':>10} {'boto3 MB/s':>11} {'proxied MB/s':>13} " \
             f"{'ours/boto3':>11} {'ours/proxied':>13}  order"
    print(header)
    print("-" * len(header))
    for size_mb, count, total, seconds, order in rows:
        rate = {name: total / 1e6 / s for name, s in seconds.items()}
        proxied = f"{rate['proxied']:>13.1f} {rate['ours'] / rate['proxied']:>11.2f}" if "proxied" in rate else \
            f"{'-':>13} {'-':>11}"
        print(f"{size_mb:>6}MB {count:>6} {rate['ours']:>10.1f} {rate['boto3']:>11.1f} {proxied.split()[0]:>13} "
              f"{rate['ours'] / rate['boto3']:>11.2f} {proxied.split()[1]:>13}  {' → '.join(order)}")


if __name__ == "__main__":
    main()
