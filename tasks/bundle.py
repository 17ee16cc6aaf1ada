"""Finish the bundle: MODEL_CARD.md, then manifest.json over every file (checksums, build key, environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from enginewright.bundle.manifest import MANIFEST_NAME, write_manifest
from enginewright.config.schemas import Manifest
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.work_dir import WorkDir

CARD_NAME = "MODEL_CARD.md"


def finish_bundle(bundle_dir: Path, card: str, manifest_fields: dict[str, Any]) -> Manifest:
    """The manifest is written last and atomically: a bundle with a manifest is complete."""
    (bundle_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (bundle_dir / CARD_NAME).write_text(card)
    return write_manifest(bundle_dir, manifest_fields)


@task(name="bundle", cache_policy=step_policy("bundle", "work", "card", "manifest_fields", "golden"),
      persist_result=True)
def bundle_task(work: WorkDir, card: str, manifest_fields: dict[str, Any], golden: str | None = None) -> Manifest:
    """`golden`: the digest of the golden records tasks/golden.py wrote into the bundle (None: none recorded)."""
    return finish_bundle(work.bundle, card, manifest_fields if golden is None else {**manifest_fields, "golden": golden})
