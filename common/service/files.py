"""Files only their owner may read: secrets files, databases, traffic logs.

Everything a service keeps that holds a secret (a token, a credential, a key) or what the
parties exchanged is mode 0600. A new file is created with that mode by ``os.open`` itself, so
that it is never readable by others, not even for an instant; an existing file readable or
writable by group or others is tightened to 0600 with a warning (it may already have been read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_MODE = 0o600

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def tighten(path: Path) -> None:
    """Restrict an existing regular file ``path`` to mode 0600 if group or others may access it.

    Anything else (a device such as ``/dev/stdout`` given as a log) is left as it is.

    Raises
    ------
    OSError
        When the mode cannot be read or changed (e.g. the file belongs to another user).
    """
    status = path.stat()
    mode = stat.S_IMODE(status.st_mode)
    if stat.S_ISREG(status.st_mode) and mode & 0o077:
        logger.warning("%s was accessible by group or others (mode %o); restricting it to 0600", path, mode)
        path.chmod(PRIVATE_MODE)


def private_file(path: Path) -> Path:
    """``path``, created empty with mode 0600 if missing, else tightened to 0600.

    The parent directories are created (mode 0700) if missing.

    Raises
    ------
    OSError
        When the file cannot be created, or its mode cannot be changed.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        tighten(path)
    return path


def append_private(path: Path, text: str) -> None:
    """Append ``text`` to ``path``, creating it with mode 0600 if it is missing (e.g. rotated away).

    The text goes out in one ``write`` on an ``O_APPEND`` descriptor (a buffered text file would
    split a long line into 8 KiB writes, and a reader could catch half a line between them); a
    short write, which only a full disk causes, is finished by further writes.
    """
    data = text.encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_MODE)
    try:
        written = 0
        while written < len(data):
            written += os.write(descriptor, data[written:])
    finally:
        os.close(descriptor)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically by a file of mode 0600 holding ``text``.

    The text goes to a temporary file in the same directory (created 0600), is synced, then
    moved into place with ``os.replace``: a reader sees the old file or the whole new one.

    Raises
    ------
    OSError
        When the directory cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, PRIVATE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
