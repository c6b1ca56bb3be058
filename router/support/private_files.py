"""Files and folders only the router's user may read: the queue, the state, keys, caches.

Dead letters and retry records hold whole events (emails, personal data) and rendered messages,
so everything the router creates is mode 0600 (files) or 0700 (folders), whatever the umask.
SQLite creates a database's ``-wal`` and ``-shm`` files with the database file's mode, so
creating the database file first (:func:`create_private_file`) covers them. Files that already
exist are left as they are: :func:`warn_if_exposed` says at start-up which ones others can read.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("router.files")

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")
"""A SQLite database and the files beside it that hold (parts of) its content."""


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parent, each new one 0700 (existing ones untouched)."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask; this one is not


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (its folders 0700)."""
    make_private_dirs(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)


def sqlite_files(database: Path) -> list[Path]:
    """``database`` and the files SQLite and the router keep beside it."""
    return [database.with_name(database.name + suffix) for suffix in SQLITE_SUFFIXES]


def exposed(path: Path) -> int | None:
    """The mode of ``path`` when others than its owner may access it, else None (also when missing)."""
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


def warn_if_exposed(paths: Iterable[Path]) -> list[Path]:
    """Log a warning for each of ``paths`` that others may read; returns them."""
    found = []
    for path in dict.fromkeys(paths):
        mode = exposed(path)
        if mode is None:
            continue
        found.append(path)
        wanted = DIR_MODE if path.is_dir() else FILE_MODE
        log.warning(
            "%s is accessible to other users (mode %04o): it may hold events and messages; chmod %o %s",
            path,
            mode,
            wanted,
            path,
            extra={"fields": {"path": str(path), "mode": f"{mode:04o}"}},
        )
    return found
