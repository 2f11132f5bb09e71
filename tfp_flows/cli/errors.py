"""The errors of the `tfp-flows` command.

`main` reports a `UsageError` as an argparse error (exit 2) and a `DataUnavailableError` in
one line (exit 1).
"""

__all__ = ["DataUnavailableError", "ResumeError", "UsageError"]


class UsageError(ValueError):
    """The command line asks for something that cannot be done."""


class ResumeError(UsageError):
    """`--resume` asked to continue a checkpoint written with different settings."""


class DataUnavailableError(UsageError):
    """The dataset is neither on disk nor downloadable (offline, blocked, ...)."""
