"""Files and folders written whole or not at all: into `<name>.partial-<random>`, renamed over `<name>` at the
end, and removed on any failure (a full disk included), so a reader only ever sees a complete result or none.
The temporary name is unique per write: two writers of one file never remove each other's half-written copy."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def written_whole(final: Path, folder: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path to write (a new empty folder when `folder`); on success it replaces `final`."""
    partial = final.with_name(f"{final.name}.partial-{uuid.uuid4().hex[:12]}")
    final.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        partial.mkdir()
    try:
        yield partial
        if folder:
            _remove(final)
            partial.rename(final)
        else:
            os.replace(partial, final)
    except BaseException:
        _remove(partial)
        raise
