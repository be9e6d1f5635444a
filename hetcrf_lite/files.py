"""Writing files safely: atomic replacement, ordinary permissions, no orphans, named errors.

Every file hetcrf_lite writes (run folders, configs, downloads) goes through here:

* the bytes go to a temporary file beside the target, which replaces it only when complete
  (``os.replace``), so a crash or ``kill -9`` never leaves a half-written file under the real name;
* the file gets the mode an ordinary ``open()`` would give (``0o666`` less the umask, ``0644``
  by default), not ``mkstemp``'s private ``0600``;
* a temporary file's name carries the writer's process id (``.NAME-PID-XXXX.tmp``), so a later
  run removes the ones whose writer is gone (:func:`remove_orphans`) and never a live writer's;
* a write that fails (read-only folder, disk full, a file where a folder should be) raises
  :class:`~hetcrf_lite.errors.OutputError` naming the path and the fix.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, Callable

from .errors import DataError, OutputError

__all__ = ["file_mode", "atomic_write_bytes", "ensure_folder", "remove_orphans", "temp_file",
           "file_sha256"]

# .NAME-PID-RANDOM.tmp (run files, configs) and .NAME.PID.RANDOM.part (downloads)
_ORPHAN = re.compile(r"^\..+[-.](?P<pid>\d+)[-.][^-.]+\.(tmp|part)$")


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _explain(err: OSError) -> str:
    fixes = {
        errno.ENOSPC: "the disk is full: free space or write somewhere else",
        errno.EDQUOT: "the disk quota is exhausted: free space or write somewhere else",
        errno.EACCES: "no permission to write there: choose a folder you own",
        errno.EPERM: "no permission to write there: choose a folder you own",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.EEXIST: "a file stands where a folder is needed: remove it or choose another path",
        errno.ENOTDIR: "a file stands where a folder is needed: remove it or choose another path",
        errno.EISDIR: "a folder stands where a file is needed: give a file name",
        errno.ELOOP: "the path holds a symbolic-link loop: fix the links or choose another path",
    }
    return fixes.get(err.errno, "check the path and the disk")


def output_error(path: str | os.PathLike, err: OSError, what: str = "write") -> OutputError:
    """An :class:`OutputError` for ``err`` raised while writing ``path``."""
    reason = err.strerror or str(err)
    out = OutputError(f"cannot {what} {path}: {reason}; {_explain(err)}.")
    out.errno = err.errno
    return out


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) for writing, or raise :class:`OutputError` saying why not.

    Checks that files can be created there (a probe file is written and removed), so a
    read-only or full folder fails before any work, not after it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(folder, err, "create the folder") from err
    if not folder.is_dir():
        raise OutputError(f"cannot use {folder} as a folder: it is a file; remove it or choose "
                          "another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".probe-{os.getpid()}-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise output_error(folder, err, "write into") from err
    return folder


def temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` beside ``path``, named for :func:`remove_orphans`, with :func:`file_mode`."""
    sep = "." if suffix == ".part" else "-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{sep}{os.getpid()}{sep}",
                               suffix=suffix)
    with suppress(OSError):  # a file system without modes (some network mounts): keep mkstemp's
        os.fchmod(fd, file_mode())
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over.

    Raises:
        OutputError: the folder cannot be created or written, or the disk is full; nothing is
            left behind (neither a partial file nor the temporary one).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path)
    except OSError as err:
        raise output_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError as err:
        _unlink(tmp)
        raise output_error(path, err) from err
    except BaseException:
        _unlink(tmp)
        raise


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (:func:`atomic_write_bytes`); NaN
    is written as JSON's non-standard ``NaN``, which ``json.load`` reads back."""
    atomic_write_bytes(Path(path), lambda fh: fh.write(json.dumps(obj, indent=2).encode()))


def _unlink(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_orphans(folder: str | os.PathLike, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files (``.*-PID-*.tmp``, ``.*.PID.*.part``) left in ``folder`` by
    writers that died (``kill -9``, power loss) before they could clean up.

    A file is an orphan when its writer's process id is not running; with ``older_than``
    (seconds), a file older than that is an orphan too, whatever its id says (for folders
    shared between machines, where another machine's process ids mean nothing here).
    Never raises: a folder that cannot be listed or a file that cannot be removed is skipped.

    Returns:
        list of Path: the files removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _ORPHAN.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = older_than is not None and now - entry.stat().st_mtime > older_than
        except OSError:
            continue
        if old or not _alive(int(match["pid"])):
            with suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# (resolved path, size, mtime_ns) -> sha256. Hashing all 16 MB of the four datasets takes about
# 25 ms, so every load verifies every file it reads; the memo only skips re-hashing an unchanged
# file within one process (a changed or replaced file gets a new size or mtime and is re-hashed).
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, memoised on its resolved path, size and modification
    time; the one file hash of the package (dataset files, a graph of your own, a run's
    ``embeddings.npy``).

    Raises:
        DataError: the file cannot be read (the message names it).
    """
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _SHA_MEMO:
            with open(path, "rb") as fh:
                _SHA_MEMO[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}. Check its permissions, "
                        "or restore it.") from err
    return _SHA_MEMO[key]
