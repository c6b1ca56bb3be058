"""Read YAML into plain data while remembering where every key and value came from.

PyYAML's SafeLoader is used for tokenising and composing only; this module builds the
Python values itself so it can record positions, reject duplicate keys and cap how far
aliases may expand. Two deliberate departures from YAML 1.1, because rules.yaml is
written by people who think in YAML 1.2 / JSON terms:

* only ``true`` and ``false`` are booleans (``on``, ``yes``, ``off`` and ``no`` stay strings,
  so ``on:`` works as a key and ``stop: no`` is not silently ``False``);
* timestamps stay strings (events are JSON, which has no date type).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.core.errors import ConfigError, Problem
from router.core.kinds import kind_of
from router.support import disk_cache

KeyPath = tuple[str | int, ...]
"""A location inside the document: mapping keys and sequence indexes from the root."""

_MAX_NODES = 1_000_000  # ~100,000 rules; still stops alias bombs ("billion laughs") early
_MAX_DEPTH = 64

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans and no implicit timestamps."""


# Copy the resolver table so the stock SafeLoader is left untouched.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

_STR_TAG = "tag:yaml.org,2002:str"


def _libyaml_loader() -> type[Any] | None:
    """_Loader on libyaml, when PyYAML was built with it.

    libyaml composes the node graph about four times faster than the pure-Python parser
    (seconds on a file of thousands of rules). A document it rejects is parsed again by the
    Python loader, whose error messages are the ones reported.
    """
    if not getattr(yaml, "__with_libyaml__", False):
        return None

    class CLoader(yaml.CSafeLoader):
        """_Loader's resolvers on libyaml's parser."""

    CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    return CLoader


_CLoader = _libyaml_loader()


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass
class YamlDocument:
    """Parsed YAML: the plain data plus where each part of it was written."""

    data: Any
    filename: str
    problems: list[Problem] = field(default_factory=list)  # non-fatal: duplicate keys, bad tags
    # Values that could not be built (bad tag, recursive alias): they read as null, and
    # validation errors about them would only repeat the problem already recorded.
    invalid_paths: list[KeyPath] = field(default_factory=list)
    # PyYAML's own (0-based) marks, made into Marks only when asked for: a file of thousands of
    # rules has hundreds of thousands of them, and a few are ever looked at.
    _values: dict[KeyPath, Any] = field(default_factory=dict, repr=False)
    _keys: dict[KeyPath, Any] = field(default_factory=dict, repr=False)
    # The text of a document read from the cache (without positions): parsed again, for its
    # positions, the first time one is asked for.
    _text: str | None = field(default=None, repr=False)

    def locate(self, path: KeyPath, *, at_key: bool = False) -> Mark | None:
        """Where ``path`` was written; falls back to its closest written ancestor.

        With ``at_key`` the mark of the mapping key is returned instead of its value, which
        is where a reader looks for a misspelt or unexpected key.
        """
        if self._text is not None:
            self._add_positions(self._text)
        if at_key and path in self._keys:
            return _from_yaml(self._keys[path])
        for end in range(len(path), -1, -1):
            mark = self._values.get(path[:end])
            if mark is not None:
                return _from_yaml(mark)
        return None

    def _add_positions(self, text: str) -> None:
        self._text = None
        try:
            parsed = _parse(text, self.filename)
        except ConfigError:  # pragma: no cover - the same text parsed before it was cached
            return
        self._values, self._keys = parsed._values, parsed._keys

    def problem(self, path: KeyPath, message: str, *, at_key: bool = False) -> Problem:
        """A Problem for ``path`` carrying this document's file name and the located mark."""
        mark = self.locate(path, at_key=at_key)
        return Problem(
            message=message,
            path=format_path(path),
            file=self.filename,
            line=mark.line if mark else None,
            column=mark.column if mark else None,
        )


def format_path(path: KeyPath) -> str:
    """Render a key path the way users read it: ``rules[2].when['data.user.id']``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += "[" + repr(part) + "]"
    return out


def _mark(node: Node) -> Mark:
    return _from_yaml(node.start_mark)


def _from_yaml(mark: Any) -> Mark:
    return Mark(mark.line + 1, mark.column + 1)


def describe_type(value: Any) -> str:
    """A value's YAML-level type with an article (``a string``), safe to show: it never reveals the value."""
    return kind_of(value, integers=True)


class _Builder:
    """Turns a composed node graph into plain data, recording marks on the way."""

    def __init__(self, loader: _Loader, doc: YamlDocument) -> None:
        self._loader = loader
        self._doc = doc
        self._count = 0
        self._active: set[int] = set()  # nodes being built: an alias back into one is a cycle

    def _add(self, path: KeyPath, node: Node, message: str, *, invalid: bool = True) -> None:
        self._doc.problems.append(Problem(message, format_path(path), self._doc.filename, *_astuple(_mark(node))))
        if invalid:  # the value was replaced by None
            self._doc.invalid_paths.append(path)

    def build(self, node: Node, path: KeyPath, depth: int = 0) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooLarge(node)
        self._doc._values[path] = node.start_mark
        if depth > _MAX_DEPTH:
            self._add(path, node, f"nested more than {_MAX_DEPTH} levels deep")
            return None
        if id(node) in self._active:
            self._add(path, node, "an alias refers to a node that contains it (recursive alias)")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    self._add(path, node, f"unsupported YAML tag '{node.tag}'", invalid=False)
                return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    self._add(path, node, f"unsupported YAML tag '{node.tag}'", invalid=False)
                return self._mapping(node, path, depth)
        finally:
            self._active.discard(id(node))
        self._add(path, node, "unsupported YAML node")  # pragma: no cover - composer makes only the three kinds
        return None

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        if node.tag == _STR_TAG:  # most values: what the constructor would return, without its overhead
            return node.value
        try:
            return self._loader.construct_object(node)
        except yaml.constructor.ConstructorError:
            self._add(path, node, f"unsupported YAML tag '{node.tag}'")
            return None
        except ValueError:  # e.g. an explicit !!int on text that is not a number
            self._add(path, node, f"value does not match its YAML tag '{node.tag}'")
            return None

    def _entries(self, node: MappingNode, path: KeyPath, depth: int) -> list[tuple[str, Node, Node]]:
        """The mapping's (key, key node, value node) in order, merge keys (``<<``) resolved."""
        own: dict[str, tuple[Node, Node]] = {}
        merged: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path, depth))
                continue
            if not isinstance(key_node, ScalarNode):
                self._add(path, key_node, "a key must be a plain string, not a list or mapping", invalid=False)
                continue
            # The key's source text is the key: `on`, `yes`, `1` are all just names here.
            key = str(key_node.value)
            if key in own:
                first = _mark(own[key][0])
                self._add(
                    (*path, key),
                    key_node,
                    f"duplicate key (first defined at line {first.line}, column {first.column})",
                    invalid=False,
                )
            own[key] = (key_node, value_node)
        result: dict[str, tuple[Node, Node]] = {}
        for key, key_node, value_node in merged:
            result.setdefault(key, (key_node, value_node))  # earlier merge sources win, as YAML says
        result.update(own)
        return [(key, k, v) for key, (k, v) in result.items()]

    def _merge_sources(self, value: Node, path: KeyPath, depth: int) -> list[tuple[str, Node, Node]]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        out: list[tuple[str, Node, Node]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                self._add(path, source, "'<<' (merge) needs a mapping or a list of mappings", invalid=False)
                continue
            if id(source) in self._active:
                self._add(path, source, "an alias refers to a node that contains it (recursive alias)", invalid=False)
                continue
            # Merged entries count as values: '<<' of aliases of merges expands like an alias bomb
            # without building a single value (ten merges of ten, nine deep, is 10**9 entries).
            self._count += len(source.value)
            if self._count > _MAX_NODES:
                raise _TooLarge(source)
            self._active.add(id(source))
            try:
                out.extend(self._entries(source, path, depth + 1))
            finally:
                self._active.discard(id(source))
        return out

    def _mapping(self, node: MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, key_node, value_node in self._entries(node, path, depth):
            self._doc._keys[(*path, key)] = key_node.start_mark
            data[key] = self.build(value_node, (*path, key), depth + 1)
        return data


def _check_expansion(root: Node) -> None:
    """Raise _TooLarge if aliases expand ``root`` past _MAX_NODES values, before building any.

    Each distinct node is sized once (an alias shares its anchor's node), so an alias bomb is
    refused in time proportional to its text, not to what it would expand to. Building counts
    too, as a backstop; this only makes refusal immediate, with the anchor that blew up.
    """
    if isinstance(root, ScalarNode):
        return
    sizes: dict[int, int] = {}

    def size(node: Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if depth > _MAX_DEPTH:  # deeper is never built
            return 1
        sizes[id(node)] = 1  # a recursive alias counts once: building refuses it
        items = node.value if isinstance(node, SequenceNode) else [part for pair in node.value for part in pair]
        total = 1
        for item in items:
            # Most nodes are scalars: counted here, without a call each (this walks every node).
            total += 1 if type(item) is ScalarNode else size(item, depth + 1)
        if total > _MAX_NODES:
            raise _TooLarge(node)
        sizes[id(node)] = total
        return total

    size(root, 0)


class _TooLarge(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _astuple(mark: Mark) -> tuple[int, int]:
    return mark.line, mark.column


def _position(text: str, index: int) -> Mark:
    line = text.count("\n", 0, index) + 1
    return Mark(line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _too_large(exc: _TooLarge, filename: str) -> ConfigError:
    where = _mark(exc.node)
    return ConfigError(
        [
            Problem(
                f"the document expands to more than {_MAX_NODES:,} values (aliases or '<<' merges nested too deeply?)",
                file=filename,
                line=where.line,
                column=where.column,
            )
        ]
    )


def _syntax_error(exc: yaml.MarkedYAMLError, filename: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    reason = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        # e.g. "mapping values are not allowed here (while scanning a simple key)"
        reason = f"{exc.problem} ({exc.context})"
    return ConfigError(
        [
            Problem(
                f"invalid YAML: {reason}",
                file=filename,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        ]
    )


def _reader_error(exc: yaml.reader.ReaderError, text: str, filename: str) -> ConfigError:
    where = _position(text, exc.position)
    character = chr(exc.character) if isinstance(exc.character, int) else exc.character
    return ConfigError(
        [
            Problem(
                f"invalid YAML: character {character!r} is not allowed in YAML",
                file=filename,
                line=where.line,
                column=where.column,
            )
        ]
    )


def _fast_loader(text: str) -> Any:
    """A libyaml loader on ``text``, or None (no libyaml; text it cannot take)."""
    if _CLoader is None:
        return None
    try:
        return _CLoader(text)
    except UnicodeEncodeError:  # a lone surrogate: the Python reader says where it is
        return None


@functools.cache
def _code_tag() -> bytes:
    """What, besides the text, decides the parsed data: this module and the YAML library."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"\0{yaml.__version__}\0{_CLoader is not None}".encode())
    return digest.digest()


def parse_yaml(text: str, filename: str = "<string>", *, cache: Path | None = None) -> YamlDocument:
    """Parse one YAML document; raises ConfigError with one located Problem if it is not valid YAML.

    Problems that do not stop parsing (duplicate keys, unsupported tags) are collected in
    ``YamlDocument.problems`` so they can be reported together with validation problems.
    An empty document yields ``data=None``.

    With ``cache`` (a file in a :mod:`router.support.disk_cache` directory), a document without such
    problems is remembered there, keyed by a checksum of the text and of this code; the same
    text is then read back without parsing (PyYAML builds a Python node for every value: seconds
    for thousands of rules). Its positions are found by parsing again, only if one is asked for.
    """
    if cache is None:
        return _parse(text, filename)
    checksum = hashlib.sha256(_code_tag() + text.encode("utf-8", "surrogatepass")).digest()
    stored = disk_cache.read(cache)
    if stored is not None:
        try:
            found, data = marshal.loads(stored)
        except Exception:  # a damaged file: parsed again and rewritten below
            found = data = None
        if found == checksum:
            return YamlDocument(data=data, filename=filename, _text=text)
    doc = _parse(text, filename)
    if not doc.problems and not doc.invalid_paths:
        with contextlib.suppress(ValueError):  # a value marshal cannot write (YAML builds none): not cached
            disk_cache.write(cache, marshal.dumps((checksum, doc.data)))
    return doc


def _parse(text: str, filename: str) -> YamlDocument:
    c_loader = _fast_loader(text)
    if c_loader is not None:
        fast = YamlDocument(data=None, filename=filename)
        try:
            node = c_loader.get_single_node()
            if node is not None:
                if "*" in text:  # without an alias nothing expands
                    _check_expansion(node)
                fast.data = _Builder(c_loader, fast).build(node, ())
            return fast
        except _TooLarge as exc:
            raise _too_large(exc, filename) from None  # parsing again would only build it all again
        except yaml.MarkedYAMLError as exc:
            if "nesting depth" in str(exc.problem):
                # libyaml stops at 1,000 levels at once; the Python parser would take seconds
                # to reach its recursion limit on the same text.
                raise _syntax_error(exc, filename) from None
            # otherwise parsed again below, for the Python parser's error messages
        except (yaml.YAMLError, RecursionError):
            pass  # parsed again below, for the Python parser's error messages
        finally:
            c_loader.dispose()
    doc = YamlDocument(data=None, filename=filename)
    try:
        loader = _Loader(text)  # checks every character of the text at once
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, filename) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            if "*" in text:
                _check_expansion(node)
            doc.data = _Builder(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, filename) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, filename) from None
    except _TooLarge as exc:
        raise _too_large(exc, filename) from None
    except RecursionError:
        raise ConfigError([Problem("invalid YAML: nested too deeply", file=filename)]) from None
    finally:
        loader.dispose()
    return doc
