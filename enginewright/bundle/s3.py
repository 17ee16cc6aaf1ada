"""Bundle bytes to and from S3 directly (never through the MLflow server), each object checked by sha256.

Upload: boto3's transfer manager (s3transfer's `TransferManager`: every file of a batch at once, large ones in
parallel parts) with `ChecksumAlgorithm="SHA256"`, so each part carries the sha256 boto3 computed from the file and
the store recomputes it on receipt and refuses a mismatch (BadDigest). Beside the transfer, our own read of each
file computes its sha256, compared with the manifest; the file's size and mtime must not change from before the
upload to after it, so the bytes boto3 sent are the bytes we hashed. After the upload a HEAD with checksum mode
returns the object's checksum: a single object's must be the file's sha256; a multipart object's is the composite
of the part digests the store checked (`-N` suffixed), and N must be the file's part count. A store that keeps no
checksums is verified by reading the object back instead. (Computing every part's digest ourselves as well — a
third sha256 pass over every byte — cost 7 % of the 2 GB throughput on a 2-core machine: docs/results.md.) Any
failure deletes what this call stored and raises: nothing is reported uploaded that was not verified. A multipart
upload left open by a process that was killed (or by a store that was down when it was aborted) is aborted by the
next upload of the same key.

Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance
roles); they are never passed through this module's arguments, so they cannot end up in logs or parameters.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from enginewright.config.settings import MiB, TransferSettings
from enginewright.errors import InputError, StoreError, UploadError


@contextmanager
def store_errors(endpoint_url: str | None, what: str):
    """boto3's failures, once its own retries are spent, as one StoreError line naming the store and the step."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StoreError(f"S3 at {endpoint_url or 'AWS'} failed to {what}: {exc}") from None


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # no leading slash; a prefix ends without a slash

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise InputError(f"S3 URI {uri!r} is not s3://<bucket>[/<prefix>]")
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key.strip("/"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, relative: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{relative}" if self.key else relative)


def s3_client(endpoint_url: str | None, concurrency: int = 8, timeout_s: float | None = None, attempts: int = 3):
    """boto3 S3 client: path-style addressing and SigV4 for S3-compatible endpoints, standard retries (`attempts`;
    a preflight check asks for 1 and a short `timeout_s`).

    Each client comes from a session of its own: boto3's default session keeps the first credentials it
    resolved for the life of the process, so a long-lived worker would miss rotated keys."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"total_max_attempts": attempts, "mode": "standard"},  # `max_attempts` there counts retries only
        max_pool_connections=concurrency + 4,
        **({"connect_timeout": timeout_s, "read_timeout": timeout_s} if timeout_s is not None else {}),
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


@dataclass(frozen=True)
class UploadItem:
    path: Path
    target: S3Location
    size: int
    sha256: str  # hex, from the manifest


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def transfer_config(settings: TransferSettings):
    """boto3's TransferConfig for our settings: parts of `part_size` (grown by s3transfer where a file would need
    more than S3's 10,000), `concurrency` requests at once."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=settings.part_size, multipart_chunksize=settings.part_size,
                          max_concurrency=settings.concurrency)


def part_size(settings: TransferSettings, size: int) -> int:
    """The part size the transfer manager uploads a file of `size` bytes with (s3transfer's own adjustment)."""
    from s3transfer.utils import ChunksizeAdjuster

    return ChunksizeAdjuster().adjust_chunksize(settings.part_size, size)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:  # hashlib releases the GIL: files hash in parallel with the upload
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _expected_checksum(settings: TransferSettings, size: int, sha256_hex: str, stored: str | None) -> str:
    """What the store must report for our bytes: a single object's checksum is the file's sha256; a multipart
    object's is a composite of the part digests the store checked on receipt (boto3 computed them from the same,
    unchanged file), so what is compared there is its number of parts."""
    if stored is not None and "-" in stored:
        return f"{stored.rsplit('-', 1)[0]}-{-(-size // part_size(settings, size))}"
    return _b64(bytes.fromhex(sha256_hex))


def _abort_leftovers(client, target: S3Location) -> None:
    """A multipart upload of this key that a killed earlier attempt left open (its abort could not reach the
    store, and no lifecycle rule expires it) is aborted before a new one starts. Keys hold the bundle id and
    the run id, and one build key builds at a time, so an open upload of the key is such a leftover."""
    from botocore.exceptions import ClientError

    try:
        listing = client.list_multipart_uploads(Bucket=target.bucket, Prefix=target.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotImplemented":
            return  # a store without the listing: nothing to find
        raise
    for upload in listing.get("Uploads", []):
        if upload["Key"] == target.key:
            client.abort_multipart_upload(Bucket=target.bucket, Key=target.key, UploadId=upload["UploadId"])


def verify_object(client, target: S3Location, size: int, sha256_hex: str, expected_checksum: str,
                  head: dict | None = None) -> None:
    """The stored object has `size` bytes and the checksum of our bytes; without store checksums, read it back."""
    head = head or client.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED")
    if head["ContentLength"] != size:
        raise UploadError(f"{target.uri} holds {head['ContentLength']} bytes, the manifest says {size}")
    stored = head.get("ChecksumSHA256")
    if stored is not None:
        if stored != expected_checksum:
            raise UploadError(f"{target.uri}: the store's sha256 checksum {stored} differs from ours {expected_checksum}")
        return
    digest = hashlib.sha256()
    for chunk in client.get_object(Bucket=target.bucket, Key=target.key)["Body"].iter_chunks(8 * MiB):
        digest.update(chunk)
    if digest.hexdigest() != sha256_hex:
        raise UploadError(f"{target.uri} read back with sha256 {digest.hexdigest()}, the manifest says {sha256_hex}")


def upload_verified(client, items: list[UploadItem], settings: TransferSettings,
                    progress: Callable[[int], None] = lambda n: None) -> None:
    """Upload every item through the transfer manager and verify each stored object (see the module's docstring);
    raises UploadError (or boto's) on failure, with what this call stored deleted."""
    from s3transfer.manager import TransferManager
    from s3transfer.subscribers import BaseSubscriber

    class Progress(BaseSubscriber):
        def on_progress(self, future, bytes_transferred: int, **kwargs) -> None:
            progress(bytes_transferred)

    config = transfer_config(settings)
    for item in items:
        if item.size >= config.multipart_threshold:
            _abort_leftovers(client, item.target)
    stored: list[UploadItem] = []
    before = [_unchanged(item.path) for item in items]
    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="s3-hash") as hashing, \
                TransferManager(client, config) as manager:
            digests = [hashing.submit(_file_sha256, item.path) for item in items]
            uploads = [manager.upload(str(item.path), item.target.bucket, item.target.key,
                                      extra_args={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": item.sha256}},
                                      subscribers=[Progress()]) for item in items]
            failure: BaseException | None = None
            for item, upload in zip(items, uploads, strict=True):
                try:
                    upload.result()
                    stored.append(item)
                except BaseException as exc:  # the rest still finish (or fail) before the manager closes
                    failure = failure or exc
            if failure is not None:
                raise failure
            for item, computed, stat in zip(items, digests, before, strict=True):
                if computed.result() != item.sha256 or _unchanged(item.path) != stat or stat[0] != item.size:
                    raise UploadError(f"{item.path} changed since its manifest was written (sha256 differs); "
                                      "not kept")
                head = client.head_object(Bucket=item.target.bucket, Key=item.target.key, ChecksumMode="ENABLED")
                verify_object(client, item.target, item.size, item.sha256,
                              _expected_checksum(settings, item.size, item.sha256, head.get("ChecksumSHA256")), head)
    except BaseException:
        for item in stored:
            try:
                client.delete_object(Bucket=item.target.bucket, Key=item.target.key)
            except Exception:  # the store may be the thing that failed: the object was never reported stored
                pass
        raise


def list_objects(client, prefix: S3Location) -> list[tuple[str, int]]:
    """(key relative to the prefix, size) of every object under it."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key + "/"):
        for entry in page.get("Contents", []):
            found.append((entry["Key"][len(prefix.key) + 1:], entry["Size"]))
    return found


def download_prefix(client, prefix: S3Location, dest: Path, settings: TransferSettings,
                    accept: Callable[[str], Path], progress: Callable[[int], None] = lambda n: None) -> None:
    """Download every object under `prefix` into `dest`, in parallel; `accept` maps a key to a safe local path."""
    config = transfer_config(settings)
    objects = list_objects(client, prefix)
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="s3-download") as pool:
        futures = []
        for relative, _size in objects:
            local = dest / accept(relative)
            local.parent.mkdir(parents=True, exist_ok=True)
            futures.append(pool.submit(client.download_file, prefix.bucket, prefix.child(relative).key, str(local),
                                       Config=config, Callback=progress))
        for future in futures:
            future.result()


def delete_prefix(client, prefix: S3Location) -> int:
    keys = [prefix.child(relative).key for relative, _ in list_objects(client, prefix)]
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=prefix.bucket,
                              Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
    return len(keys)
