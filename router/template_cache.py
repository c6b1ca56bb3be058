"""An on-disk cache of compiled templates, so a restart or ``router check`` does not compile them all again.

Jinja's bytecode cache keys an entry by the template's name and a checksum of its source. Our
compiled code is more than the source: :mod:`router.template_limits` rewrites every template
before it is compiled (guarded loops and ``~``), and the sandbox settings live in
:mod:`router.templates`. An entry compiled by an older version of either would bring back a
template without those guards, so the checksum here also covers a *tag*: a hash of those
modules' source, Jinja's version, and the filter and test names the environment knows (an
unknown filter is a compile-time error). Any change to them makes every entry stale.

Beside the compiled templates the cache keeps their *facts* (what the checks read from a syntax
tree, see ``router.templates._Facts``; one file per templates folder), written only for the
templates that compiled: a template whose facts are found with the same checksum is neither
parsed nor compiled again. The directory rules are
:mod:`router.disk_cache`'s.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.bccache import Bucket, BytecodeCache

from router import disk_cache

_TAGGED_MODULES = ("templates.py", "template_limits.py", "template_cache.py")


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


class TemplateCache(BytecodeCache):
    """Compiled templates in ``directory``, valid only for the same source *and* the same ``tag``."""

    def __init__(self, directory: Path, tag: str) -> None:
        self.directory = Path(directory)
        self.tag = tag

    def get_source_checksum(self, source: str) -> str:
        return hashlib.sha256(f"{self.tag}\0{source}".encode()).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        data = disk_cache.read(self.directory / f"{bucket.key}.cache")
        if data is not None:
            bucket.load_bytecode(io.BytesIO(data))  # a wrong magic or checksum, or a damaged file, leaves it empty

    def dump_bytecode(self, bucket: Bucket) -> None:
        buffer = io.BytesIO()
        bucket.write_bytecode(buffer)
        disk_cache.write(self.directory / f"{bucket.key}.cache", buffer.getvalue())

    def load_facts(self, folder: Path) -> dict[str, tuple[str, Any]]:
        """What :meth:`dump_facts` stored for the templates of ``folder``: file -> (checksum, facts)."""
        data = disk_cache.read(self._facts_file(folder))
        try:
            stored = json.loads(data) if data is not None else None
        except ValueError:
            return {}
        if not isinstance(stored, dict):
            return {}
        return {
            file: (entry[0], entry[1])
            for file, entry in stored.items()
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        }

    def dump_facts(self, folder: Path, facts: dict[str, tuple[str, Any]]) -> None:
        """Remember the facts (JSON) of the templates of ``folder`` that compiled: file -> (checksum, facts).

        One file for the folder: reading a thousand small files costs more than parsing one.
        """
        disk_cache.write(self._facts_file(folder), json.dumps(facts).encode())

    def _facts_file(self, folder: Path) -> Path:
        return self.directory / f"facts-{hashlib.sha256(str(folder).encode()).hexdigest()[:32]}.json"

    def clear(self) -> None:
        for pattern in ("*.cache", "facts-*.json"):
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)
