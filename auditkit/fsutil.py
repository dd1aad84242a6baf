"""Atomic file output, hashing, and what a process has published: an interrupted run never leaves a
half-written file behind, and says truthfully what it did write."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from auditkit.errors import InputError, RunError
from auditkit.messages import shown

_CHUNK = 1 << 20
_WRITTEN: list[str] = []
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


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in folder ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable(path: Path, *, flag: str) -> None:
    """Refuse a ``path`` whose folder cannot be created or written, before any heavy work; creates nothing."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {str(path)!r} lies under {str(ancestor)!r}, which is a file",
                         hint=f"choose another {flag}")
    try:  # a real probe: os.access says yes to root everywhere, even in /proc or on a read-only mount
        os.rmdir(tempfile.mkdtemp(prefix=".auditkit-probe.", dir=ancestor))
    except OSError as exc:
        raise InputError(f"cannot write into {str(ancestor)!r} ({exc.strerror})",
                         hint=f"choose a writable {flag}") from None


def write_error(exc: OSError, *, doing: str, where: str | os.PathLike[str], flag: str) -> RunError:
    """An I/O failure while writing outputs, as one ``error:`` line and a ``hint:`` that names the fix."""
    folder = str(where)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free space on the filesystem holding {folder!r} (or choose another {flag}) and run again"
    elif exc.errno == errno.EROFS:
        hint = f"{folder!r} is on a read-only filesystem: choose another {flag}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = f"check the permissions of {folder!r}, or choose another {flag}"
    else:
        hint = f"check {folder!r}, or choose another {flag}"
    detail = exc.strerror or type(exc).__name__
    return RunError(f"cannot {doing} ({detail})", hint=hint)


def note_written(what: str) -> None:
    """Remember that this process has published ``what`` (e.g. "run runs/x (line 3 of runs/audit-trail.jsonl)"),
    so an interruption afterwards is not reported as "nothing was written"."""
    _WRITTEN.append(what)


def written() -> tuple[str, ...]:
    """What this process has published since :func:`forget_written`."""
    return tuple(_WRITTEN)


def forget_written() -> None:
    """Start a new invocation: nothing published yet (the CLI calls this before each command)."""
    _WRITTEN.clear()


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
