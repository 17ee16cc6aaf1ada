"""Retry conditions for Prefect tasks that talk to servers."""

from __future__ import annotations

from typing import Any

from enginewright.errors import BundleVerificationError, ExportVerificationError, InputError

# Never better on a second try: bad input, and bytes that fail verification (a tampered bundle was downloaded
# three times before it was refused).
PERMANENT = (InputError, BundleVerificationError, ExportVerificationError)


def retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: bad input or bytes that fail verification never get better by retrying; a timeout or a
    flaky server might."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False
