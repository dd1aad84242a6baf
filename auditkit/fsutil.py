"""Atomic file output and hashing: an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from auditkit.errors import InputError
from auditkit.messages import shown

_CHUNK = 1 << 20
_KINDS = ((stat.S_ISDIR, "is a folder"), (stat.S_ISFIFO, "is a named pipe (FIFO), not a file"),
          (stat.S_ISCHR, "is a character device, not a file"), (stat.S_ISBLK, "is a block device, not a file"),
          (stat.S_ISSOCK, "is a socket, not a file"))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed, so readers see
    either the old file or the complete new one, never a partial write.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates 0600 files; outputs get the permissions a plain open() would give them.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, mode="wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """``None`` for a regular file (symlinks followed), else what ``path`` is instead, for a message:
    ``"does not exist"``, ``"is a folder"``, ``"is a named pipe (FIFO), not a file"``, ...

    Only ``stat`` is called: a FIFO is never opened (that would block until a writer appears), and a
    device such as ``/dev/zero`` is never read (it never ends).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except ValueError:  # a NUL character in the name
        return "is not a valid path"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    return next((kind for test, kind in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "is not a file")


def not_a_file_error(path: str | os.PathLike[str], *, role: str, hint: str) -> InputError | None:
    """``None`` for a regular file, else the error to raise: ``{role} '{path}' {what it is}`` with ``hint``
    (for a missing file or a folder) or advice to save the data to a regular file (pipes, devices)."""
    problem = regular_file_problem(path)
    if problem is None:
        return None
    if "not a file" in problem:
        hint = ("save it to a regular file and pass that path (auditkit hashes what it reads, so it never reads "
                "a pipe or a device)")
    return InputError(f"{role} {shown(path)} {problem}", hint=hint)


def open_regular_file(path: str | os.PathLike[str], *, role: str, hint: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file with :func:`not_a_file_error`.

    The open is non-blocking and the check is repeated on the open descriptor, so a file swapped for a
    FIFO after an earlier check neither hangs the process nor gets read.
    """
    error = not_a_file_error(path, role=role, hint=hint)
    if error is not None:
        raise error
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot read {role} {shown(path)} ({exc.strerror})", hint=hint) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_a_file_error(path, role=role, hint=hint) or InputError(f"{role} {shown(path)} changed while it was "
                                                                         "opened", hint=hint)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
