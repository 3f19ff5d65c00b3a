"""Crash-safe file writes, the JSON-lines reader and a lock that leaves no file behind; without torch (the pipeline
and the report import this).

:func:`atomic_write` writes a temporary file beside the target, fsyncs it, then ``os.replace`` (atomic on POSIX):
readers see the old file or the new one, never a torn one, and a failed write leaves no temporary behind. The
temporary file is created with mode ``0o666`` minus the umask, so the file put in place has the mode any other new
file gets (``tempfile.mkstemp`` would give ``0o600``, unreadable to a group or a web server).

:func:`held_lock` holds an exclusive :class:`filelock.FileLock` and removes the lock file before it lets go.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = ["atomic_write", "atomic_write_text", "read_json", "read_jsonl", "held_lock"]


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, empty file beside ``path`` (``O_EXCL``: never someone else's), mode ``0o666`` minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a binary temporary file beside ``path``, then put it in place atomically.

    The file gets the mode a plain ``open(path, "w")`` of a new file would: ``0o666`` minus the process umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike):
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file; a torn (unparseable) line ends the read; a missing file gives []."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


@contextlib.contextmanager
def held_lock(path: str | os.PathLike, on_wait: Callable[[], object] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when missing) for the ``with`` body; remove the file at the end.

    ``on_wait()`` is called once when another holder makes this one wait. The lock is :class:`filelock.FileLock`
    (``flock``). The file is unlinked while the lock is still held, then the lock is released: a waiter that had
    opened the old file gets the lock on a file the path no longer names, and opens the path again. ``filelock``
    detects an unlinked inode (``st_nlink == 0``); this checks, besides, that ``path`` names the locked file
    (:func:`_names_locked_file`), which also holds on NFS, where a file removed while another client has it open is
    renamed (``.nfsXXXX``) and keeps its link. So removing the file never lets two holders in, and no lock file is
    left behind.
    """
    import filelock
    path = str(path)
    told = False
    while True:
        lock = filelock.FileLock(path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if on_wait is not None and not told:
                on_wait()
                told = True
            lock.acquire()
        if _names_locked_file(lock, path):
            break
        lock.release()          # the holder before removed (or renamed) that file: lock the one the path names
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            lock.release()


def _names_locked_file(lock, path: str) -> bool:
    """Whether ``path`` still names the file ``lock`` holds (True when this filelock does not say which it holds)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if fd is None:
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False
