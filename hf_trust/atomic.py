"""Atomic writes: a crash or a kill mid-write never leaves a half file that a later run reads.

Every file hf-trust writes goes through here. A file is written to a temporary name in the same
folder (same file system, so the final ``os.replace`` is atomic), flushed and fsynced, then renamed
over the target. A folder is built in a staging folder beside the target and renamed into place; a
previous folder is moved aside first and removed only after the new one is in place, so at every
instant either the old or the new complete folder exists under the target name.

A base-layer module: it imports nothing from the rest of the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    # os.umask can only be read by setting it; put it back at once (no threads race this in practice,
    # and it is read before any file is created).
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, directory: bool = False) -> None:
    """Give a file or folder made by ``mkstemp`` / ``mkdtemp`` (0600 / 0700) the mode a plain ``open`` /
    ``mkdir`` would have given it, so that reports and adapters are not private by accident."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is; not every platform allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path`` atomically.

    For writers that need a file name (``torch.save``, ``safetensors.save_file``, ``np.save``).
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _plain_mode(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Serialise ``obj`` as JSON (indent 2 unless overridden) and write it atomically."""
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_save(path: PathLike, save_fn: Callable[[Path], Any]) -> Path:
    """Call ``save_fn(tmp_path)`` (e.g. ``lambda p: torch.save(obj, p)``) and move the result onto ``path``."""
    with atomic_path(path) as tmp:
        save_fn(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it becomes ``path`` in one rename.

    If ``path`` already exists it is moved aside first and deleted only after the new folder is in
    place. The caller decides whether replacing ``path`` is allowed (this helper never checks whose
    folder it is). On an exception the staging folder is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    _plain_mode(staging, directory=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]
