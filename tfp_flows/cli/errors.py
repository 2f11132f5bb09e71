"""The errors of the `tfp-flows` command; `main` reports them as argparse errors (exit 2)."""

__all__ = ["ResumeError", "UsageError"]


class UsageError(ValueError):
    """The command line asks for something that cannot be done."""


class ResumeError(UsageError):
    """`--resume` asked to continue a checkpoint written with different settings."""
