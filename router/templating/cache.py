"""An on-disk cache of compiled templates, so a restart or ``router check`` does not compile them all again.

An entry is keyed by the template's file name and a checksum of its source. Our compiled code
is more than the source: :mod:`router.templating.limits` rewrites every template before it is
compiled (guarded loops and ``~``), and the sandbox settings live in :mod:`router.templating.templates`.
An entry compiled by an older version of either would bring back a template without those
guards, so the checksum also covers a *tag*: a hash of those modules' source, Jinja's version,
and the filter and test names the environment knows (an unknown filter is a compile-time
error). Any change to them makes every entry stale. Code objects are stored with marshal, whose
format is the Python version's: the file's header names that version.

Beside the compiled code each entry keeps the template's *facts* (what the checks read from a
syntax tree, see ``router.templating.compiled.Facts``), and only templates that compiled have an entry:
a template whose entry has the same checksum is neither parsed nor compiled again. All the
entries of a templates folder are in one file (reading and writing a thousand small files cost
more than a tenth of a second each way). The directory rules are :mod:`router.support.disk_cache`'s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import marshal
import mmap
import struct
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from router.support import disk_cache

_TAGGED_MODULES = ("templates.py", "sandbox.py", "compiled.py", "limits.py", "cache.py")


@functools.cache
def code_tag() -> str:
    """A hash of the source of the modules that shape compiled templates, and of Jinja's version."""
    digest = hashlib.sha256(jinja2.__version__.encode())
    here = Path(__file__).parent
    for module in _TAGGED_MODULES:
        digest.update(b"\0" + module.encode() + b"\0")
        digest.update((here / module).read_bytes())
    return digest.hexdigest()


def environment_tag(filters: Iterable[str], tests: Iterable[str]) -> str:
    """The tag for an environment with these filter and test names: :func:`code_tag` plus the names."""
    names = "\0".join(sorted(filters)) + "\0\0" + "\0".join(sorted(tests))
    return hashlib.sha256(f"{code_tag()}\0{names}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """What the cache keeps for one template file."""

    checksum: str  # of the tag and the source
    facts: Any  # router.templating.compiled.Facts.dump()
    code: types.CodeType | bytes  # the compiled module (as Jinja's Environment.compile returns it), or its marshal


_HEADER = b"router-templates-3\0" + importlib.util.MAGIC_NUMBER
_LENGTH = struct.Struct("<Q")


class Bundle:
    """A folder's cache file, mapped: its index read at once, each template's code when asked for.

    The file is the header, the index's size, the index (file -> checksum, facts, offset and
    size of its code) and the code of each template (marshal). Reading one template's code at a
    time, as it is loaded, keeps a load's memory as flat as compiling them one by one.
    """

    def __init__(self, mapped: mmap.mmap) -> None:
        self._mapped = mapped
        self.index: dict[str, tuple[str, Any, int, int]] = {}
        self._base = 0
        if mapped[: len(_HEADER)] != _HEADER:
            return
        try:
            (size,) = _LENGTH.unpack_from(mapped, len(_HEADER))
            start = len(_HEADER) + _LENGTH.size
            index = self._loads(start, size)
        except (ValueError, EOFError, TypeError, struct.error):
            return
        self._base = start + size
        if isinstance(index, dict):
            self.index = {
                file: value
                for file, value in index.items()
                if isinstance(file, str)
                and isinstance(value, tuple)
                and len(value) == 4
                and isinstance(value[0], str)
                and isinstance(value[2], int)
                and isinstance(value[3], int)
            }

    def _loads(self, start: int, size: int) -> Any:
        if start < 0 or size < 0 or start + size > len(self._mapped):
            raise ValueError("outside the file")
        with memoryview(self._mapped) as view, view[start : start + size] as part:
            return marshal.loads(part)

    def checksum(self, file: str) -> str | None:
        entry = self.index.get(file)
        return entry[0] if entry is not None else None

    def facts(self, file: str) -> Any:
        return self.index[file][1]

    def code(self, file: str) -> types.CodeType | None:
        """The template's compiled module, or None when the file is damaged."""
        _, _, offset, size = self.index[file]
        try:
            code = self._loads(self._base + offset, size)
        except (ValueError, EOFError, TypeError):
            return None
        return code if isinstance(code, types.CodeType) else None

    def blob(self, file: str) -> bytes:
        """The template's code as stored (marshal), to be written again."""
        _, _, offset, size = self.index[file]
        return self._mapped[self._base + offset : self._base + offset + size]

    def close(self) -> None:
        self._mapped.close()


class TemplateCache:
    """Compiled templates in ``directory``, valid only for the same source *and* the same ``tag``."""

    def __init__(self, directory: Path, tag: str) -> None:
        self.directory = Path(directory)
        self.tag = tag

    def get_source_checksum(self, source: str) -> str:
        return hashlib.sha256(f"{self.tag}\0{source}".encode()).hexdigest()

    def load_checksums(self, folder: Path) -> dict[str, str]:
        """The checksum of each template :meth:`dump` stored for ``folder``: file -> checksum."""
        with self.open(folder) as bundle:
            return {file: entry[0] for file, entry in bundle.index.items()} if bundle is not None else {}

    @contextlib.contextmanager
    def open(self, folder: Path) -> Iterator[Bundle | None]:
        """What :meth:`dump` stored for the templates of ``folder``, while the block runs (None: nothing)."""
        mapped = disk_cache.read_mapped(self._file(folder))
        if mapped is None:
            yield None
            return
        bundle = Bundle(mapped)
        try:
            yield bundle
        finally:
            bundle.close()

    def dump(self, folder: Path, entries: dict[str, Entry]) -> None:
        """Remember the templates of ``folder`` that compiled (replacing what was stored for the folder)."""
        index: dict[str, tuple[str, Any, int, int]] = {}
        blobs: list[bytes] = []
        offset = 0
        for file, entry in entries.items():
            blob = entry.code if isinstance(entry.code, bytes) else marshal.dumps(entry.code)
            index[file] = (entry.checksum, entry.facts, offset, len(blob))
            blobs.append(blob)
            offset += len(blob)
        stored = marshal.dumps(index)
        disk_cache.write(self._file(folder), b"".join([_HEADER, _LENGTH.pack(len(stored)), stored, *blobs]))

    def _file(self, folder: Path) -> Path:
        return self.directory / f"templates-{hashlib.sha256(str(folder).encode()).hexdigest()[:32]}.marshal"

    def clear(self) -> None:
        # *.cache and facts-*.json: the per-template files of earlier versions.
        for pattern in ("templates-*.marshal", "*.cache", "facts-*.json"):
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)
