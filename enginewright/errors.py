"""The one exception hierarchy. Messages name the bad value and what would be accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class EnginewrightError(Exception):
    """Base of every error the CLI reports on one line. `exit_code` is what the CLI exits with."""

    exit_code = 1


class InputError(EnginewrightError):
    """Bad user input: a spec value, a path, a data file. Raised before anything is registered."""

    exit_code = 2


class CheckpointError(InputError):
    """The source checkpoint cannot be used (missing, unreadable, pickle-only, remote code)."""


class CalibrationError(InputError):
    """The calibration source cannot give the requested samples."""


class EvalDataError(InputError):
    """The offline evaluation data is missing a file a requested task needs."""


class RegistryError(EnginewrightError):
    """The MLflow registry refused or lost something."""


class StoreError(EnginewrightError):
    """The bundle store (S3) failed a request after boto3's retries: down, out of space, access denied."""


class UploadError(EnginewrightError):
    """An object could not be stored, or what the store holds differs from the local bytes."""


class AnnounceError(EnginewrightError):
    """Prefect did not take an announcement (an event a deployment trigger should turn into a run)."""


class BundleVerificationError(EnginewrightError):
    """A bundle's files do not match its manifest (missing, resized, changed, unlisted): never transient."""


class ExportVerificationError(EnginewrightError):
    """The exported checkpoint is not the model that was evaluated (a tensor, a scale or a config field differs)."""


class GateFailed(EnginewrightError):
    """The candidate lost more accuracy than the spec allows (or failed the smoke check)."""


class DeployRefused(EnginewrightError):
    """The version was not deployed; the previous serving configuration is untouched."""


class VerificationFailed(EnginewrightError):
    """A switched release failed verification against its endpoint; it was rolled back (or, asked not to, left)."""


class StackError(EnginewrightError):
    """A stack component could not be started, reached or stopped."""


def describe_validation_error(exc: ValidationError, what: str = "build spec") -> str:
    """One line per pydantic error, joined: `quantization.format: Input should be 'fp8', ... (got 'fp9')`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
        parts.append(f"{loc}: {err['msg']}{got}")
    return f"invalid {what}: " + "; ".join(parts)


class RuntimeLaneFailed(EnginewrightError):
    """A runtime could not evaluate the candidate; the evaluation falls back to the simulated one (tasks.runtimes)."""
