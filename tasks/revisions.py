"""The newest revision of a watched checkpoint: a Hub commit sha, a hash of an S3 prefix's listing, or the
content hash of a local directory. One GET per Hub repo (`HfApi.model_info`), one listing per S3 prefix."""

from __future__ import annotations

from pathlib import Path

from enginewright.errors import EnginewrightError
from enginewright.hashing import sha256_json, sha256_tree
from enginewright.s3 import S3Location, s3_client
from tasks.sources import looks_like_local_path


def latest_revision(source: str, hub_endpoint: str | None, s3_endpoint: str | None, timeout_s: float = 10) -> str:
    if source.startswith("s3://"):
        prefix = S3Location.parse(source)
        client = s3_client(s3_endpoint)
        listing = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key + "/"):
            listing += [(o["Key"], o["ETag"], o["Size"]) for o in page.get("Contents", [])]
        if not listing:
            raise FileNotFoundError(f"{source} holds no objects")
        return "s3:" + sha256_json(sorted(listing))
    if looks_like_local_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{source} is not a directory")
        return "local:" + sha256_tree(path)
    from huggingface_hub import HfApi

    # token=None: huggingface_hub reads HF_TOKEN itself, so the token never passes through our code or logs.
    sha = HfApi(endpoint=hub_endpoint).model_info(source, timeout=timeout_s).sha
    if sha is None:
        raise EnginewrightError(f"the Hub at {hub_endpoint or 'huggingface.co'} returned no commit sha for {source}")
    return sha
