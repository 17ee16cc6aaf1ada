"""The one exception hierarchy. Messages name the bad value and what would be accepted."""


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
