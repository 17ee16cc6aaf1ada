"""Where a command writes: check before any work that it can (`require_writable_dir`), and recognise a full work
directory behind whatever error the writing library raised (an OSError with ENOSPC from Python, a RuntimeError
from torch's zip writer, ...), to say so in one line instead of a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from enginewright.errors import EnginewrightError, InputError

NEARLY_FULL_BYTES = 1 << 20


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def require_writable_dir(path: Path, what: str, hint: str) -> None:
    """`path` is (or can be created as) a directory this process can write in: its nearest existing folder takes
    a temporary file, deleted at once (permission bits say nothing for root, and only a write shows a read-only
    mount or a virtual file system). A read-only or regular-file ENGINEWRIGHT_HOME passed the dry-run and then
    failed the build with a traceback."""
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise InputError(f"{what} {str(existing)!r} is not a directory; {hint}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".enginewright-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"{what} {str(existing)!r} is not writable ({os.strerror(exc.errno or 0)}); {hint}") from None


def disk_full_error(exc: BaseException, work_dir: Path) -> EnginewrightError | None:
    """An EnginewrightError when `exc` was caused by `work_dir`'s disk filling up; None otherwise."""
    enospc = any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in _chain(exc))
    existing = next((p for p in (work_dir, *work_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if not enospc and free >= NEARLY_FULL_BYTES:
        return None
    return EnginewrightError(
        f"the work directory {work_dir} ran out of space ({free} bytes free) during the build "
        f"({type(exc).__name__}); no partial file was kept and nothing was registered. Free space or set "
        "ENGINEWRIGHT_HOME to a larger disk, then run again: finished steps are cached")
