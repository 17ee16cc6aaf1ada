"""A build's work directory, `builds/<build key>/`: where each step of one build key writes, and its incarnation.

The incarnation is a random id created with the directory: it is part of every cache key that points into the
directory, so deleting it means recompute instead of a cached result naming files that are gone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

INCARNATION_FILE = ".incarnation"
LOCK_FILE = ".build.lock"


def incarnation(directory: Path) -> str:
    """The id of this life of `directory`, created with it (and again if it is deleted and recreated)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / INCARNATION_FILE
    if not marker.is_file():
        candidate = directory / f"{INCARNATION_FILE}.{uuid.uuid4().hex}"
        candidate.write_text(uuid.uuid4().hex)
        try:
            os.link(candidate, marker)  # atomic and never overwrites: of two processes, the first one wins
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return marker.read_text().strip()


@dataclass(frozen=True)
class WorkDir:
    """Where one build key's steps write. Its cache identity is the build key and this life of the directory."""

    path: Path
    build_key: str
    incarnation: str

    @classmethod
    def open(cls, builds_dir: Path, build_key: str) -> WorkDir:
        path = builds_dir / build_key[:16]
        (path / "bundle").mkdir(parents=True, exist_ok=True)
        return cls(path=path, build_key=build_key, incarnation=incarnation(path))

    def cache_identity(self) -> dict[str, str]:
        return {"build_key": self.build_key, "incarnation": self.incarnation}

    @contextmanager
    def locked(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold this build key's lock: two builds of one key on one machine (a manual build while the
        deployment runs the same spec) take turns, and the second finds the first one's steps cached."""
        lock = FileLock(self.path / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait(f"another build of key {self.build_key[:16]} is running here; waiting for it to finish")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @property
    def bundle(self) -> Path:
        return self.path / "bundle"

    @property
    def checkpoint(self) -> Path:
        return self.bundle / "checkpoint"

    @property
    def llm_api_yaml(self) -> Path:
        return self.bundle / "llm_api.yaml"

    @property
    def quantized_state(self) -> Path:
        return self.path / "quantized.mto.pth"

    @property
    def offload_dir(self) -> Path:
        """Layers a layerwise memory plan offloads to disk (a CPU worker's spill); rewritten by each load."""
        return self.path / "offload"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation"

    @property
    def gate(self) -> Path:
        return self.path / "gate"

    @property
    def trtllm_bench(self) -> Path:
        return self.path / "trtllm-bench"
