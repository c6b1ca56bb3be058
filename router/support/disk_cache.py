"""Where the router caches what it derives from the configuration (compiled templates, parsed rules.yaml).

Everything cached is keyed by a checksum of its source *and* of the router code that made it,
so a stale entry is never used; it is only ever a shortcut. The directory is
``$ROUTER_CACHE`` (``off`` turns caching off), else ``.router/cache`` beside rules.yaml. What
is read back is trusted (compiled templates run as Python), so a directory that is not owned by
this user, or that others may write to, is not used, and every I/O failure is ignored.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import mmap
import os
import stat
from pathlib import Path

from router.support.private_files import make_private_dirs

log = logging.getLogger(__name__)

_OFF = ("off", "0", "false", "no")
_sequence = itertools.count()


def cache_root(config_path: Path) -> Path | None:
    """The cache directory for the rules file at ``config_path`` (absolute), or None when caching is off."""
    configured = os.environ.get("ROUTER_CACHE", "").strip()
    if configured.lower() in _OFF:
        return None
    if configured:
        return Path(configured).expanduser()
    if config_path.name.startswith("<"):  # loaded from text, not from a file
        return None
    return config_path.parent / ".router" / "cache"


def usable(directory: Path) -> bool:
    """Whether ``directory`` exists (created 0700 if needed), is owned by this user and not writable by others."""
    return _usable(str(directory))


@functools.lru_cache(maxsize=64)
def _usable(directory: str) -> bool:
    try:
        make_private_dirs(Path(directory))  # every folder it creates 0700, `.router` included
        info = os.stat(directory)
    except OSError as exc:
        log.debug("cache %s not used: %s", directory, exc)
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("cache %s not used: it must be a directory of this user that others cannot write to", directory)
        return False
    return True


def read(target: Path) -> bytes | None:
    """The content of ``target`` in a usable cache directory, or None."""
    if not usable(target.parent):
        return None
    try:
        return target.read_bytes()
    except OSError:
        return None


def read_mapped(target: Path) -> mmap.mmap | None:
    """The content of ``target`` in a usable cache directory, mapped read-only (close it), or None.

    For large files read in parts: the content never lands on the heap, where megabytes read
    once and freed would leave a hole that the process keeps. Safe to map: :func:`write` only
    ever replaces a file (rename), it never truncates or rewrites one in place.
    """
    if not usable(target.parent):
        return None
    try:
        with open(target, "rb") as stream:
            return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None


def write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` in a usable cache directory, atomically (a reader never sees half a file)."""
    if not usable(target.parent):
        return
    # Written aside and renamed; the name is unique to this process (and mkstemp's random names
    # cost more than the write itself, for thousands of small files).
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{next(_sequence)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except OSError as exc:
        log.debug("cache: cannot write %s: %s", target, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
