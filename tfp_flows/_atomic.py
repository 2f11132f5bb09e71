"""One way to write a file or directory so that its name only ever holds a complete copy.

Everything tfp_flows writes for a user (checkpoints, `metrics.json`, plots, SavedModels,
benchmark pages) goes through `staged`: the content is written under a temporary name
beside the target, flushed to disk, and renamed into place. A crash at any point leaves
either the old file or the new one under the target name, never a half-written one, and at
worst a temporary file whose name starts with `STAGING_PREFIX`.
"""

import contextlib
import json
import os
import shutil
import uuid

__all__ = ["STAGING_PREFIX", "staged", "write_json", "write_text"]

# Temporary names start with this prefix (hidden, and ignored by checkpoint listings).
STAGING_PREFIX = ".tmp-"


@contextlib.contextmanager
def staged(path):
    """Yields a temporary path beside `path`; on success moves it into place atomically.

    The temporary name ends with the target's name, so writers that look at the suffix
    (`model.save` wants `.keras`) accept it. Whatever the body writes there, a file or a
    whole directory, replaces `path` when the body returns; if the body raises, the
    temporary is removed and `path` is untouched. An existing directory at `path` is
    replaced only once the new one is complete (there is a moment when neither name
    exists, but never one when a partial directory does).

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with staged(target) as temporary:
        ...     with open(temporary, "w") as file:
        ...         _ = file.write("done")
        >>> open(target).read()
        'done'
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = os.path.join(directory, f"{STAGING_PREFIX}{uuid.uuid4().hex}-{name}")
    try:
        yield staging
        _fsync(staging)
        if os.path.isdir(staging) and os.path.isdir(path):
            retired = os.path.join(directory, f"{STAGING_PREFIX}{uuid.uuid4().hex}-old-{name}")
            os.rename(path, retired)
            os.rename(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
        _fsync(directory)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
        elif os.path.lexists(staging):
            os.remove(staging)


def write_text(path, text):
    """Writes `text` to `path` atomically (see `staged`)."""
    with staged(path) as staging, open(staging, "x") as file:
        file.write(text)


def write_json(path, payload):
    """Writes `payload` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _fsync(path):
    """Flushes a file, or a directory's entries, to disk where the platform allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
