"""Bundle bytes to and from S3 directly (never through the MLflow server), each object checked by sha256.

Upload, per file: one sequential read computes the whole file's sha256 (compared with the manifest before the
object is completed) and each part's sha256. Parts go up in parallel, one thread pool for every part of every
file, each carrying its digest as `x-amz-checksum-sha256`: the store recomputes it on receipt and refuses a
mismatch (BadDigest). After completion a HEAD with checksum mode returns the object's composite checksum (the
sha256 of the part digests, `-N` suffixed), compared with the one computed from the bytes we read. A store that
keeps no checksums is verified by reading the object back instead. Any failure aborts the open multipart uploads
and raises; nothing is reported uploaded that was not verified. An upload left open by a process that was killed
(or by a store that was down when it was aborted) is aborted by the next upload of the same key.

Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance
roles); they are never passed through this module's arguments, so they cannot end up in logs or parameters.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def _read_parts(path: Path, part_size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(part_size):
            yield chunk


@dataclass
class _OpenObject:
    item: UploadItem
    upload_id: str | None = None  # None: a single PUT
    parts: list[Future] = field(default_factory=list)  # each gives (CompleteMultipartUpload part, sha256 digest)


class _Uploader:
    def __init__(self, client, settings: TransferSettings, progress: Callable[[int], None]):
        self.client = client
        self.settings = settings
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="s3-upload")
        # Parts read but not yet sent: bounds memory to (concurrency + 2) × part size.
        self.in_flight = threading.BoundedSemaphore(settings.concurrency + 2)
        self.open: list[_OpenObject] = []

    def run(self, items: list[UploadItem]) -> None:
        try:
            for item in items:
                self._send(item)
            completions = [self.pool.submit(self._complete_and_verify, obj) for obj in self.open]
            for done in completions:
                done.result()
        except BaseException:
            self._abort_open()
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _send(self, item: UploadItem) -> None:
        part_size = self.settings.part_size_for(item.size)
        obj = _OpenObject(item)
        self.open.append(obj)
        if item.size > part_size:
            self._abort_leftovers(item.target)
            obj.upload_id = self.client.create_multipart_upload(
                Bucket=item.target.bucket, Key=item.target.key, ChecksumAlgorithm="SHA256",
                Metadata={"sha256": item.sha256},
            )["UploadId"]
        whole = hashlib.sha256()  # in this thread, in file order; the parts are hashed by the workers
        for number, chunk in enumerate(_read_parts(item.path, part_size) if item.size else [b""], start=1):
            whole.update(chunk)
            self.in_flight.acquire()
            obj.parts.append(self.pool.submit(self._send_part, obj, number, chunk))
        if whole.hexdigest() != item.sha256:
            raise UploadError(f"{item.path} changed since its manifest was written (sha256 differs); not uploaded")

    def _send_part(self, obj: _OpenObject, number: int, chunk: bytes) -> tuple[dict, bytes]:
        try:
            digest = hashlib.sha256(chunk).digest()  # hashlib releases the GIL: parts hash in parallel
            target = obj.item.target
            if obj.upload_id is None:
                self.client.put_object(Bucket=target.bucket, Key=target.key, Body=chunk, ChecksumSHA256=_b64(digest),
                                       Metadata={"sha256": obj.item.sha256})
                answer = {}
            else:
                answer = self.client.upload_part(Bucket=target.bucket, Key=target.key, UploadId=obj.upload_id,
                                                 PartNumber=number, Body=chunk, ChecksumSHA256=_b64(digest))
            self.progress(len(chunk))
            return {"PartNumber": number, "ETag": answer.get("ETag"), "ChecksumSHA256": _b64(digest)}, digest
        finally:
            self.in_flight.release()

    def _complete_and_verify(self, obj: _OpenObject) -> None:
        results = [part.result() for part in obj.parts]
        parts, digests = [r[0] for r in results], [r[1] for r in results]
        target = obj.item.target
        if obj.upload_id is not None:
            self.client.complete_multipart_upload(Bucket=target.bucket, Key=target.key, UploadId=obj.upload_id,
                                                  MultipartUpload={"Parts": parts})
            obj.upload_id = None
            expected = f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(parts)}"
        else:
            expected = _b64(digests[0])
        verify_object(self.client, target, obj.item.size, obj.item.sha256, expected)

    def _abort_leftovers(self, target: S3Location) -> None:
        """A multipart upload of this key that a killed earlier attempt left open (its abort could not reach the
        store, and no lifecycle rule expires it) is aborted before a new one starts. Keys hold the bundle id and
        the run id, and one build key builds at a time, so an open upload of the key is such a leftover."""
        from botocore.exceptions import ClientError

        try:
            listing = self.client.list_multipart_uploads(Bucket=target.bucket, Prefix=target.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NotImplemented":
                return  # a store without the listing: nothing to find
            raise
        for upload in listing.get("Uploads", []):
            if upload["Key"] == target.key:
                self.client.abort_multipart_upload(Bucket=target.bucket, Key=target.key, UploadId=upload["UploadId"])

    def _abort_open(self) -> None:
        for obj in self.open:
            if obj.upload_id is not None:
                try:
                    self.client.abort_multipart_upload(Bucket=obj.item.target.bucket, Key=obj.item.target.key,
                                                       UploadId=obj.upload_id)
                except Exception:  # the store may be the thing that failed: the next upload of the key aborts it
                    pass


def verify_object(client, target: S3Location, size: int, sha256_hex: str, expected_checksum: str) -> None:
    """The stored object has `size` bytes and the checksum of our bytes; without store checksums, read it back."""
    head = client.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED")
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
    """Upload every item in parallel parts and verify each stored object; raises UploadError (or boto's) on failure."""
    _Uploader(client, settings, progress).run(items)


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
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_chunksize=settings.part_size, max_concurrency=settings.concurrency)
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
