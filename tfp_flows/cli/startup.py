"""Importing TensorFlow for the command without its start-up log.

Importing TensorFlow logs, through absl's C++ logging, notes that do not concern a
`tfp-flows` user: that oneDNN is on, that no CUDA driver was found, which CPU instructions
it could use and, at the first operation on a machine with CUDA libraries but no GPU,
`failed call to cuInit`. `TF_CPP_MIN_LOG_LEVEL` filters what TensorFlow logs once its
logging is set up; the command sets it to 3 (INFO, WARNING and ERROR records hidden:
failures still reach the user as Python exceptions) unless the user set it, whose level
then holds. What the libraries log while they load, before their logging is set up ("All
log messages before absl::InitializeLog() is called are written to STDERR"), no setting
filters: the command captures the stderr file descriptor during the import and writes the
capture back without the log records below the level, so that one level governs both.
"""

import contextlib
import os
import re
import sys
import tempfile

__all__ = ["LOG_LEVEL", "QUIET_LOG_LEVEL", "command_log_level", "import_tensorflow"]

LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"
# The first line of an absl log record ("I0000 00:00:1796032371.632393   31206 port.cc:153]
# ...") and the one line absl writes before its logging is set up, a warning.
_RECORD = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ [^\]\s]+:\d+\] ")
_BEFORE_INITIALIZE_LOG = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def import_tensorflow():
    """Imports TensorFlow with the command's log level (see the module docstring).

    Does nothing if TensorFlow is imported already: its log level is then set.
    """
    if "tensorflow" in sys.modules:
        return
    with _stderr_without_records_below(command_log_level()):
        import tensorflow  # noqa: F401


def command_log_level():
    """`TF_CPP_MIN_LOG_LEVEL` as an int, set to `QUIET_LOG_LEVEL` first if unset.

    A value that is not an int filters nothing (0).
    """
    os.environ.setdefault(LOG_LEVEL, QUIET_LOG_LEVEL)
    try:
        return int(os.environ[LOG_LEVEL])
    except ValueError:
        return 0


def _severity(line):
    """The severity (0 INFO .. 3 FATAL) of a line that starts a log record, else `None`."""
    if line.startswith(_BEFORE_INITIALIZE_LOG):
        return _SEVERITIES[b"W"]
    record = _RECORD.match(line)
    return None if record is None else _SEVERITIES[record.group(1)]


@contextlib.contextmanager
def _stderr_without_records_below(level):
    """Captures file descriptor 2 in the block; writes it back without records below `level`.

    Only lines that start a record are dropped: anything else written meanwhile (Python
    warnings, tracebacks) comes back in order. Without a usable descriptor 2 the block runs
    as it is.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no sys.stderr, or no descriptor 2
        yield
        return
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                kept = b"".join(
                    line for line in capture.read().splitlines(keepends=True)
                    if (severity := _severity(line)) is None or severity >= level)
                while kept:
                    kept = kept[os.write(2, kept):]
    finally:
        os.close(saved)
