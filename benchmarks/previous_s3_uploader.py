"""The S3 uploader enginewright used before issue 31 (a hand-written multipart uploader: one sequential read per
file computing its sha256 and each part's, parts sent in parallel with `x-amz-checksum-sha256`, completed, HEAD-
verified), kept verbatim here only so `benchmarks/upload_throughput.py` measures it beside its replacement, boto3's
transfer manager (enginewright/bundle/s3.py), on the same bytes. Not used by enginewright."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from enginewright.bundle.s3 import S3Location, UploadItem, verify_object
from enginewright.config.settings import TransferSettings
from enginewright.errors import UploadError


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
        part_size = max(self.settings.part_size, -(-item.size // 10_000))
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


def upload_verified_previous(client, items: list[UploadItem], settings: TransferSettings,
                    progress: Callable[[int], None] = lambda n: None) -> None:
    """Upload every item in parallel parts and verify each stored object; raises UploadError (or boto's) on failure."""
    _Uploader(client, settings, progress).run(items)
