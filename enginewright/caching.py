"""Cache keys for the build flow's Prefect tasks.

A step is cached under `<step>-<key>`, where `key` is the build key (or, for steps that do not depend on
the recipe, a narrower key) joined with the *incarnation* of the directory the step writes into: a random
id created with that directory. Deleting a work directory therefore means recompute, never a cached
result that points at files that are gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

CacheKeyFn = Callable[[Any, dict[str, Any]], str | None]
INCARNATION_FILE = ".incarnation"


def keyed_by(step: str) -> CacheKeyFn:
    """Cache key function for a task taking a `cache_key: str` parameter."""

    def cache_key_fn(_context: Any, parameters: dict[str, Any]) -> str:
        return f"{step}-{parameters['cache_key']}"

    return cache_key_fn


def incarnation(directory: Path) -> str:
    """The id of this life of `directory`, created with it (and again if it is deleted and recreated)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / INCARNATION_FILE
    if not marker.is_file():
        marker.write_text(uuid.uuid4().hex)
    return marker.read_text().strip()


def retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: bad input never gets better by retrying; a timeout or a flaky server might."""
    from enginewright.errors import InputError

    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False
