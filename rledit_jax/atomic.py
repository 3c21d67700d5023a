"""Writing files and directories so that an interrupted run never leaves a half-written one behind.

Everything is written to a temporary name beside its destination and renamed into place (an atomic
`os.replace` on one file system) only when complete; on any exception the temporary is removed and
the destination is left as it was.
"""

import contextlib
import json
import os
import shutil
import tempfile


def check_output(path: str, overwrite: bool) -> str:
    """`path` made absolute; raises FileExistsError when it exists and `overwrite` is False."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"output {path!r} exists; pass --overwrite (overwrite=True) to replace it")
    return path


@contextlib.contextmanager
def atomic_directory(path: str, *, overwrite: bool = False):
    """Yields a new empty directory that becomes `path` when the block succeeds (replacing an existing
    `path` only with `overwrite`)."""
    path = check_output(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    try:
        target = os.path.join(work, "out")
        os.mkdir(target)
        yield target
        if os.path.exists(path):
            os.rename(path, os.path.join(work, "old"))
        os.rename(target, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary file name beside `path` (same suffix) that replaces `path` on success."""
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=os.path.splitext(path)[1], dir=os.path.dirname(path)
    )
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """`open(path, mode)` (a write mode) through `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_json(path: str, obj) -> None:
    """`obj` as indented JSON at `path`, through `atomic_open`."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=1)
