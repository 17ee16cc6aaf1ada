"""Retry conditions for Prefect tasks that talk to servers."""

from __future__ import annotations

from typing import Any

from enginewright.errors import InputError


def retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: bad input never gets better by retrying; a timeout or a flaky server might."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return False
