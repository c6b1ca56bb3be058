"""The sandboxed Jinja environment that renders notifications, and template resolution.

``templates/NAME.j2`` defines the blocks ``title`` and ``body`` (in a file without a ``body``
block, everything outside the ``title`` block is the body); ``NAME.CHANNELTYPE.j2`` overrides it for one channel type and may
``{% extends "NAME.j2" %}`` to replace a single block. A block named after the channel type
(``{% block discord %}``) holds a channel-native message in YAML (:mod:`router.templating.native`). Every
render runs under time and size limits (:mod:`router.templating.limits`). A :class:`Templates` is built once per
configuration load and renders many times, so everything that can be resolved ahead of a
render (which file, which block functions, the inheritance chain) is resolved once and cached.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import re
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import jinja2.exceptions as jexc
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, Undefined, nodes
from jinja2.runtime import Context, new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from router.core.errors import TemplateError
from router.core.events import Event
from router.core.suggest import did_you_mean
from router.templating.cache import Bundle, Entry, TemplateCache, environment_tag
from router.templating.compile_workers import SharedMap
from router.templating.filters import truncate_text
from router.templating.limits import (
    OUTPUT_LIMIT,
    TIME_LIMIT,
    Budget,
    LimitExceeded,
    LimitTransformer,
    check_binop,
    check_brace_format,
    check_call,
    collect,
    guard_filters,
)
from router.templating.limits import current as _budget
from router.templating.native import RichPayload, build_payload

if TYPE_CHECKING:
    from router.config.models import Rule

BlockFn = Callable[[Context], Iterator[str]]
_METHODS = (types.MethodType, types.BuiltinMethodType)

SUFFIX = ".j2"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # no dots: NAME.TYPE.j2 must split one way only
_INLINE_CACHE_SIZE = 1024

RICH_BLOCKS = frozenset({"discord", "slack"})
"""Block names holding a channel-native message; they never print into the body."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered notification: the ``title`` block and the ``body``, stripped and truncated.

    ``payload`` is the channel-native message of the block named after the channel type
    (``{% block discord %}``), parsed and validated, when the template has one.
    """

    title: str
    body: str
    payload: dict[str, Any] | None = None


class EventView(dict[str, Any]):
    """An event as a dict whose keys also read as attributes: ``event.type`` and ``event["type"]``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _event_view(event: Event) -> EventView:
    return EventView(event.as_dict())


def build_context(
    event: Event,
    *,
    rule: Rule | None = None,
    channel: Mapping[str, Any] | None = None,
    events: Sequence[Event] | None = None,
) -> dict[str, Any]:
    """The variables a template sees: ``event``, ``data``, ``now``, ``rule``, ``channel`` and, for digests, ``events`` and ``count``.

    ``channel`` keeps only ``name``, ``type`` and ``markdown`` (the dialect for the
    ``escape_markdown`` filter): channel options hold secrets and never reach a template.
    """
    context: dict[str, Any] = {
        "event": _event_view(event),
        "data": event.data,
        # When the message is rendered (UTC): a retry resends the message as first rendered.
        "now": datetime.now(UTC),
        "rule": (
            {
                "name": rule.name,
                "on": list(rule.on),
                "template": rule.template,
                "job": rule.job,
                "channels": list(rule.channels),
            }
            if rule is not None
            else {}
        ),
        "channel": {key: channel[key] for key in ("name", "type", "markdown") if key in channel} if channel else {},
    }
    if events is not None:
        context["events"] = [_event_view(item) for item in events]
        context["count"] = len(events)
    return context


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox with immutable containers, reading payload keys before dict methods.

    Immutable: a template must not change the event that later rules and channels see.
    Keys first: event payloads often have keys like ``items``, ``values`` or ``count``, and
    ``data.items`` should be that key, not ``dict.items``.
    Limited: calls, loops and the operators that can build huge values check the render's time
    and size budget (:mod:`router.templating.limits`).
    """

    # Intercepting these also stops Jinja from folding `'x' * 10**9` into a constant at compile time.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, _METHODS):  # every attribute read comes here: the cheap test first
            return None
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = str(value.__self__)  # wrap_str_format only wraps the methods of strings

        def limited(*args: Any, **kwargs: Any) -> str:
            values = [*args, *kwargs.values()]
            if args and isinstance(args[0], Mapping):  # format_map
                values.extend(args[0].values())
            check_brace_format(text, values)
            return wrapped(*args, **kwargs)

        return limited

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_call(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        # Compiling only (the trees Templates parses for itself stay as written).
        return super()._generate(LimitTransformer().visit(source), name, filename, defer_init)


class _Loader(FileSystemLoader):
    """Loads a template from code compiled ahead (the cache, or workers), or compiles the tree Templates already parsed.

    Jinja's own ``load`` would parse the source a second time; compiling the tree that
    :meth:`Templates.compile_all` parsed for its checks makes each file parsed once. The code
    each template ran is kept in ``compiled`` while :meth:`Templates.compile_all` runs, to be
    cached.
    """

    def __init__(self, folder: Path, trees: dict[str, nodes.Template]) -> None:
        super().__init__(folder)
        self._trees = trees
        self.precompiled: dict[str, types.CodeType] = {}
        self.compiled: dict[str, types.CodeType] = {}

    def load(self, environment: Environment, name: str, globals: MutableMapping[str, Any] | None = None) -> Template:
        code = self.precompiled.pop(name, None)
        uptodate = None  # only read with auto_reload, which Templates turns off
        if code is None:
            source, filename, uptodate = self.get_source(environment, name)
            # The tree is rewritten in place by the limits' transformer; Templates' own checks
            # read only what it leaves as written (extends, blocks, top-level text).
            tree = self._trees.get(name)
            code = environment.compile(tree if tree is not None else source, name, filename)
        self.compiled[name] = code
        return environment.template_class.from_code(environment, code, globals or {}, uptodate)


class _FilterFailed(Exception):
    """A filter raised; carries its name so the message can say which filter and why."""

    def __init__(self, name: str, cause: Exception) -> None:
        super().__init__(name)
        self.name = name
        self.cause = cause


def _guard(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so its failures name it; Jinja's own errors (undefined, sandbox) pass through."""

    @functools.wraps(function)  # also copies jinja_pass_arg, so pass_context filters keep working
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except jexc.TemplateError:
            raise
        except Exception as exc:
            # A filter that chokes on an undefined input: the missing variable is the real cause.
            for argument in (*args, *kwargs.values()):
                if isinstance(argument, Undefined):
                    argument._fail_with_undefined_error()
            raise _FilterFailed(name, exc) from exc

    return guarded


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to render one (name, channel type): resolved once, used for every render."""

    template: Template  # the file chosen for the channel type
    blocks: dict[str, list[BlockFn]]  # every block of the extends chain, nearest definition first
    title: BlockFn | None
    body: BlockFn | None
    globals: dict[str, Any]  # the template's globals, flattened once (Jinja keeps a ChainMap)
    # Run the root render function (top-level imports, sets, macros, text) rather than
    # calling the blocks directly; only needed when the chain has such top-level code.
    via_root: bool
    # Where each block's nearest definition is: (file, line of its {% block %} tag).
    origins: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Started:
    """What :meth:`Templates.start_compiling` found and started, for :meth:`Templates.compile_all`."""

    files: list[str]  # every template file, sorted
    known: dict[str, str]  # file -> checksum, of what the cache holds
    checksums: dict[str, str]  # file -> checksum of its source (with a cache)
    todo: list[tuple[str, str, str | None]]  # (file, source, filename) being compiled
    shared: SharedMap  # compiling them


def _new_context(
    template: Template, variables: dict[str, Any], globals_: dict[str, Any], blocks: dict[str, BlockFn]
) -> Context:
    """A render context over ``variables`` (which already hold the globals), without Jinja's per-call copying."""
    return new_context(template.environment, template.name, blocks, variables, True, globals_)


def _capture(block: BlockFn, key: str, store: dict[str, str], *, emit: bool) -> BlockFn:
    def capturing(context: Context) -> Iterator[str]:
        text = collect(block(context))
        store.setdefault(key, text)
        if emit:
            yield text

    return capturing


def _silent(context: Context) -> Iterator[str]:
    """A block that prints nothing (another channel type's native block)."""
    return iter(())


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the checks and the render plans need from a template's syntax tree.

    Small and plain, so it is cached beside the compiled code: a template whose source (and
    the router's code) did not change is neither parsed nor compiled again.
    """

    references: tuple[tuple[str, int], ...]  # constant names of extends/include/import, with their line
    extends: tuple[str | None, int] | None  # the first {% extends %}: its constant name (None: computed), line
    blocks: tuple[tuple[str, int], ...]  # every {% block %}, in order, with the line of its tag
    only_blocks: bool  # the top level is only extends, blocks and literal text

    @classmethod
    def of(cls, tree: nodes.Template) -> _Facts:
        references: list[tuple[str, int]] = []
        extends: tuple[str | None, int] | None = None
        blocks: list[tuple[str, int]] = []
        # One walk in document order (what find_all yields), by hand: a thousand templates'
        # trees walked once per kind of node by Jinja's generators cost a tenth of a cold load.
        pending: list[nodes.Node] = [tree]
        while pending:
            node = pending.pop()
            kind = type(node)
            if kind is nodes.Block:
                blocks.append((node.name, node.lineno))  # type: ignore[attr-defined]
            elif kind in _REFERENCES:
                target = getattr(node, "template", None)
                constant = isinstance(target, nodes.Const) and isinstance(target.value, str)
                if constant:
                    references.append((target.value, node.lineno))  # type: ignore[union-attr]
                if kind is nodes.Extends and extends is None:
                    extends = (target.value if constant else None, node.lineno)  # type: ignore[union-attr]
            children: list[nodes.Node] = []
            for name in node.fields:
                value = getattr(node, name, None)
                if isinstance(value, list):
                    children.extend(item for item in value if isinstance(item, nodes.Node))
                elif isinstance(value, nodes.Node):
                    children.append(value)
            pending.extend(reversed(children))
        return cls(tuple(references), extends, tuple(blocks), _only_blocks(tree))

    def dump(self) -> Any:
        return [
            list(map(list, self.references)),
            list(self.extends) if self.extends else None,
            list(map(list, self.blocks)),
            self.only_blocks,
        ]

    @classmethod
    def read(cls, value: Any) -> _Facts | None:
        """The facts from :meth:`dump`'s value, or None for anything else (a damaged cache)."""
        try:
            return cls._read(value)
        except (ValueError, TypeError, IndexError):
            return None

    @classmethod
    def _read(cls, value: Any) -> _Facts:
        references, extends, blocks, only_blocks = value
        return cls(
            tuple((str(name), int(line)) for name, line in references),
            None if extends is None else (None if extends[0] is None else str(extends[0]), int(extends[1])),
            tuple((str(name), int(line)) for name, line in blocks),
            bool(only_blocks),
        )


_REFERENCES = frozenset({nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport})


def _only_blocks(tree: nodes.Template) -> bool:
    """Whether a template's top level is only extends, blocks and literal text (nothing to run)."""
    for node in tree.body:
        if isinstance(node, (nodes.Extends, nodes.Block)):
            continue
        if isinstance(node, nodes.Output) and all(isinstance(part, nodes.TemplateData) for part in node.nodes):
            continue
        return False
    return True


def _dotted(node: nodes.Node) -> str | None:
    """The source text of a variable path such as ``data.user`` or ``e["id"]``, if it is one."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        inner = _dotted(node.node)
        return f"{inner}.{node.attr}" if inner else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        inner = _dotted(node.node)
        return f"{inner}[{node.arg.value!r}]" if inner else None
    return None


def _owner_expression(tree: nodes.Template, line: int | None, key: Any) -> str | None:
    """The expression whose attribute/item ``key`` was missing, found on ``line`` of the template."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if line is not None and node.lineno != line:
            continue
        if isinstance(node, nodes.Getattr):
            hit = node.attr == key
        elif isinstance(node, nodes.Getitem):
            hit = isinstance(node.arg, nodes.Const) and node.arg.value == key
        else:
            continue
        if hit and (text := _dotted(node.node)):
            return text
    return None


def _locate(tb: TracebackType | None) -> tuple[Template | None, int | None]:
    """The innermost compiled-template frame of a traceback and its line in the template source."""
    found: tuple[Template | None, int | None] = (None, None)
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            found = (template, template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


def _failed_undefined(tb: TracebackType | None) -> Undefined | None:
    """The Undefined whose use raised, read from the raising frame (Jinja's exception does not carry it)."""
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Undefined):
            found = candidate
        tb = tb.tb_next
    return found


class Templates:
    """The templates of one folder, compiled once and rendered many times.

    ``filters`` are installed exactly as given (the plugin manager passes the built-in
    filters plus the plugins' ones). With ``cache_dir``, compiled templates and what the checks
    read from their trees are cached there (:mod:`router.templating.cache`), so an unchanged
    template is neither parsed nor compiled by the next load.
    """

    def __init__(
        self,
        folder: Path,
        filters: Mapping[str, Callable[..., Any]] | None = None,
        *,
        time_limit: float = TIME_LIMIT,
        output_limit: int = OUTPUT_LIMIT,
        cache_dir: Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.time_limit = time_limit
        self.output_limit = output_limit
        self._trees: dict[str, nodes.Template] = {}
        self._facts: dict[str, _Facts] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = TemplateCache(self.cache_dir, "") if self.cache_dir is not None else None  # tagged below
        self._loader = _Loader(self.folder, self._trees)
        self._env = _Sandbox(
            loader=self._loader,
            undefined=StrictUndefined,
            autoescape=False,  # chat and email text, not HTML
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # a reload builds a new Templates; never stat files per render
            cache_size=-1,
        )
        for name, function in (filters or {}).items():
            self._env.filters[name] = _guard(name, function)
        guard_filters(self._env.filters)
        if self._cache is not None:
            # Tagged once the filters are in: their names are part of what an entry was compiled for.
            self._cache.tag = environment_tag(self._env.filters, self._env.tests)
        self._globals = dict(self._env.globals)
        self._files = self._list_files()
        self._plans: dict[tuple[str, str | None], _Plan | TemplateError] = {}
        self._inline: dict[str, Template | TemplateError] = {}
        self._started: _Started | None = None

    # -- discovery ---------------------------------------------------------------------------

    def _list_files(self) -> frozenset[str]:
        if not self.folder.is_dir():
            return frozenset()
        return frozenset(
            path.name
            for path in self.folder.iterdir()
            if path.name.endswith(SUFFIX) and not path.name.startswith(".") and path.is_file()
        )

    def exists(self, name: str, channel_type: str | None = None) -> bool:
        """Whether ``NAME.j2`` exists, or ``NAME.<channel_type>.j2`` when a channel type is given."""
        if not _NAME.match(name):
            return False
        if f"{name}{SUFFIX}" in self._files:
            return True
        return (
            channel_type is not None
            and bool(_NAME.match(channel_type))
            and f"{name}.{channel_type}{SUFFIX}" in self._files
        )

    def names(self) -> list[str]:
        """The base names (``NAME``) of every template in the folder, sorted."""
        return sorted({file.split(".", 1)[0] for file in self._files if _NAME.match(file.split(".", 1)[0])})

    # -- compiling ---------------------------------------------------------------------------

    def start_compiling(self, *, processes: int | None = None) -> None:
        """Start parsing and compiling the templates the cache does not have, in worker processes when there are many.

        :meth:`compile_all` finishes the work (and starts it when this was not called); call
        :meth:`stop_compiling` when it will not be. Lets a load compile templates while it
        reads rules.yaml. ``processes`` caps the processes used, this one included.
        """
        self.stop_compiling()
        files = (
            sorted(
                path.relative_to(self.folder).as_posix()
                for path in self.folder.rglob(f"*{SUFFIX}")
                if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.folder).parts)
            )
            if self.folder.is_dir()
            else []
        )
        cache = self._cache
        # Only the checksums for now: the cached code is read by compile_all (held from here, it
        # would sit under everything loaded meanwhile and leave the heap fragmented).
        known = cache.load_checksums(self.folder) if cache is not None else {}
        checksums: dict[str, str] = {}
        todo: list[tuple[str, str, str | None]] = []  # (file, source, filename) to parse and compile
        for file in files:
            try:
                source, filename, _ = self._source(file)
            except Exception:  # reported by compile_all, where the file is compiled in this process
                continue
            if cache is not None:
                checksum = checksums[file] = cache.get_source_checksum(source)
                if known.get(file) == checksum:
                    continue
            todo.append((file, source, filename))
        # The environment, not self: a Templates dropped without compile_all stops its workers at once.
        shared = SharedMap(functools.partial(_prepare, self._env), todo, processes=processes)
        self._started = _Started(files, known, checksums, todo, shared)

    def stop_compiling(self) -> None:
        """Drop what :meth:`start_compiling` started (its worker processes are stopped)."""
        if self._started is not None:
            self._started.shared.close()
            self._started = None

    @property
    def compiling_processes(self) -> int:
        """Worker processes started by :meth:`start_compiling` and still running (this one not counted)."""
        return self._started.shared.children if self._started is not None else 0

    def compile_all(self, *, processes: int | None = None) -> list[TemplateError]:
        """Compile every ``*.j2`` under the folder and resolve every override; return all errors found.

        Templates not found in the cache are parsed and compiled first, shared with forked
        worker processes when there are many (:meth:`start_compiling`); any of them that failed
        is then done again here, which reports its errors.
        """
        if not self.folder.is_dir():
            self.stop_compiling()
            return []
        if self._started is None:
            self.start_compiling(processes=processes)
        started, self._started = self._started, None
        assert started is not None
        errors: dict[str, TemplateError] = {}  # by message: a broken parent fails each child the same way
        ready: dict[str, tuple[Any, bytes]] = {}  # file -> (facts dump, marshalled code) compiled just now
        for (file, _, _), result in zip(started.todo, started.shared.join(), strict=True):
            if result is not None:
                ready[file] = result
        try:
            with contextlib.ExitStack() as stack:
                cached = None
                if self._cache is not None and len(ready) < len(started.checksums):
                    cached = stack.enter_context(self._cache.open(self.folder))
                remembered = self._load_all(started, ready, cached, errors)
                if self._cache is not None and {f: e.checksum for f, e in remembered.items()} != started.known:
                    for file, entry in remembered.items():
                        if entry.code == b"" and cached is not None:  # read from the cache: copied as stored
                            remembered[file] = Entry(entry.checksum, entry.facts, cached.blob(file))
                    self._cache.dump(self.folder, remembered)
        finally:
            # Every plan is made: the trees and code objects are not needed any more (megabytes).
            self._trees.clear()
            self._loader.precompiled.clear()
            self._loader.compiled.clear()
        return list(errors.values())

    def _load_all(
        self,
        started: _Started,
        ready: dict[str, tuple[Any, bytes]],
        cached: Bundle | None,
        errors: dict[str, TemplateError],
    ) -> dict[str, Entry]:
        """Load every template (compiled code, cached code, or compiled here), make every plan; what to cache."""
        checksums = started.checksums
        remembered: dict[str, Entry] = {}
        for file in started.files:
            try:
                facts = None
                code: bytes | None = None  # marshalled, for the cache (b"": as the cache has it)
                prepared: tuple[Any, types.CodeType | None] | None = None
                if (fresh := ready.get(file)) is not None:
                    prepared, code = (fresh[0], _unmarshal(fresh[1])), fresh[1]
                # Read one at a time, as it is loaded; checked again: another process may have
                # rewritten the cache since start_compiling.
                elif cached is not None and file in checksums and cached.checksum(file) == checksums[file]:
                    prepared, code = (cached.facts(file), cached.code(file)), b""
                if prepared is not None and prepared[1] is not None:
                    facts = _Facts.read(prepared[0])
                    self._loader.precompiled[file] = prepared[1]
                if facts is None:  # compiled here: parsed first, and the compiler reuses the tree
                    self._loader.precompiled.pop(file, None)
                    code = None
                    facts = _Facts.of(self._parse(file))
                self._facts[file] = facts
                self._env.get_template(file)
                compiled = self._loader.compiled.pop(file, None)  # None: compiled by an earlier call
                if code is None and compiled is not None:
                    code = marshal.dumps(compiled)  # smaller than the code object, and freed when written
                if self._cache is not None and code is not None:  # only a template that compiled is remembered
                    remembered[file] = Entry(checksums[file], facts.dump(), code)
            except Exception as exc:
                error = self._explain(exc, {}, label=file)
                errors.setdefault(str(error), error)
                continue
            for error in self._missing_references(file, facts):
                errors.setdefault(str(error), error)
        for file in sorted(self._files):
            base, _, rest = file.removesuffix(SUFFIX).partition(".")
            if not _NAME.match(base) or (rest and not _NAME.match(rest)):
                continue
            plan = self._plan(base, rest or None)
            if isinstance(plan, TemplateError):
                errors.setdefault(str(plan), plan)
        return remembered

    def _source(self, file: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        loader = self._env.loader
        assert loader is not None
        return loader.get_source(self._env, file)

    def _parse(self, file: str) -> nodes.Template:
        """The syntax tree of ``file``, parsed once (the checks and the compiler both read it)."""
        tree = self._trees.get(file)
        if tree is None:
            source, _, _ = self._source(file)
            tree = self._trees[file] = self._env.parse(source, file)
        return tree

    def _facts_of(self, file: str) -> _Facts:
        facts = self._facts.get(file)
        if facts is None:
            facts = self._facts[file] = _Facts.of(self._parse(file))
        return facts

    def _missing_references(self, file: str, facts: _Facts) -> list[TemplateError]:
        """Errors for extends/include/import of a constant name that is not in the folder.

        Computed names can only be checked when rendering.
        """
        return [error for target, line in facts.references if (error := self._not_found(target, file, line))]

    def _not_found(self, target: str, file: str, line: int) -> TemplateError | None:
        """An error naming ``file`` and ``line`` when the template ``target`` does not exist, else None."""
        loader = self._env.loader
        assert loader is not None
        try:
            loader.get_source(self._env, target)
        except jexc.TemplateNotFound:
            hint = did_you_mean(target, self._files)
            return TemplateError(f"template '{target}' not found{hint}", template=file, line=line)
        return None

    def _file_for(self, name: str, channel_type: str | None) -> str:
        if not _NAME.match(name):
            raise TemplateError(f"invalid template name {name!r} (letters, digits, '_' and '-' only)", template=name)
        if channel_type is not None and _NAME.match(channel_type):
            override = f"{name}.{channel_type}{SUFFIX}"
            if override in self._files:
                return override
        file = f"{name}{SUFFIX}"
        if file in self._files:
            return file
        if not self.folder.is_dir():
            raise TemplateError(f"the template folder {self.folder} does not exist", template=file)
        also = f" (nor {name}.{channel_type}{SUFFIX})" if channel_type else ""
        raise TemplateError(f"not found in {self.folder}{also}{did_you_mean(name, self.names())}", template=file)

    def _plan(self, name: str, channel_type: str | None) -> _Plan | TemplateError:
        key = (name, channel_type)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        file = f"{name}{SUFFIX}"
        plan: _Plan | TemplateError
        try:
            file = self._file_for(name, channel_type)
            plan = self._resolve(file)
        except TemplateError as exc:
            plan = exc
        except Exception as exc:
            plan = self._explain(exc, {}, label=file)
        self._plans[key] = plan
        return plan

    def _resolve(self, file: str) -> _Plan:
        """Follow ``{% extends %}`` from ``file`` and collect the block functions of the whole chain."""
        leaf = self._env.get_template(file)
        blocks: dict[str, list[BlockFn]] = {}
        origins: dict[str, tuple[str, int]] = {}
        simple = True
        chain: list[str] = []
        current: str | None = file
        while current is not None:
            if current in chain:
                raise TemplateError(f"extends loop: {' -> '.join([*chain, current])}", template=file)
            chain.append(current)
            template = self._env.get_template(current)
            facts = self._facts_of(current)
            simple = simple and facts.only_blocks
            for block_name, function in template.blocks.items():
                blocks.setdefault(block_name, []).append(function)
            for block_name, line in facts.blocks:
                origins.setdefault(block_name, (current, line))
            parent: str | None = None
            if facts.extends is not None:
                parent, line = facts.extends
                if parent is None:
                    raise TemplateError("extends needs a quoted template name", template=current, line=line)
                if error := self._not_found(parent, current, line):
                    raise error
            current = parent
        title = blocks["title"][0] if "title" in blocks else None
        body = blocks["body"][0] if "body" in blocks else None
        return _Plan(
            leaf, blocks, title, body, dict(leaf.globals), via_root=not simple or body is None, origins=origins
        )

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        channel_type: str | None = None,
        max_title: int | None = None,
        max_body: int | None = None,
        payload_model: type[RichPayload] | None = None,
    ) -> Rendered:
        """Render template ``name`` (``NAME.<channel_type>.j2`` when present), stripped and cut to the limits.

        With a ``payload_model``, a block named ``channel_type`` (``{% block discord %}``) is
        rendered too, parsed as YAML and validated into ``Rendered.payload``; a template without
        that block renders exactly as without a model. The render runs under the time and size
        limits; passing one raises a TemplateError.
        """
        plan = self._plans.get((name, channel_type)) or self._plan(name, channel_type)
        if isinstance(plan, TemplateError):
            raise TemplateError(plan.reason, template=plan.template, line=plan.line)
        variables = {**plan.globals, **context}
        body_block = plan.body
        rich = channel_type if payload_model is not None and channel_type in plan.blocks else None
        token = _budget.set(Budget.start(self.time_limit, self.output_limit))
        try:
            context_ = _new_context(plan.template, variables, plan.globals, {})  # blocks are set below
            if plan.via_root or body_block is None:
                title, body, rich_text = self._render_via_root(plan, context_, rich)
            else:
                context_.blocks = plan.blocks  # shared: block functions only read it
                title = collect(plan.title(context_)) if plan.title else ""
                body = collect(body_block(context_))
                rich_text = collect(plan.blocks[rich][0](context_)) if rich else None
        except Exception as exc:
            raise self._explain(exc, context, label=plan.template.name) from None
        finally:
            _budget.reset(token)
        payload = None
        if rich is not None and rich_text is not None and payload_model is not None:
            file, line = plan.origins.get(rich, (plan.template.name or name, 0))
            payload = build_payload(payload_model, rich_text, template=file, line=line or None, block=rich)
        return Rendered(truncate_text(title.strip(), max_title), truncate_text(body.strip(), max_body), payload)

    @staticmethod
    def _render_via_root(plan: _Plan, context: Context, rich: str | None) -> tuple[str, str, str | None]:
        captured: dict[str, str] = {}
        blocks = {key: list(functions) for key, functions in plan.blocks.items()}
        # Capturing wrappers go in front of the chain, so super() still finds each block's parent.
        if plan.title:
            # Without a body block the document flow is the body, so the title must not appear in it.
            blocks["title"].insert(0, _capture(plan.title, "title", captured, emit=plan.body is not None))
        if plan.body:
            blocks["body"].insert(0, _capture(plan.body, "body", captured, emit=True))
        # A channel-native block is YAML for the channel, never part of the body.
        for other in (RICH_BLOCKS | {rich}) if rich else RICH_BLOCKS:
            if other in blocks:
                silent = _capture(plan.blocks[other][0], other, captured, emit=False) if other == rich else _silent
                blocks[other].insert(0, silent)
        context.blocks = blocks
        whole = collect(plan.template.root_render_func(context))
        # A block the layout never printed (say, inside a false {% if %}) is still rendered on its own.
        title = captured.get("title")
        if title is None:
            title = collect(plan.title(context)) if plan.title else ""
        body = captured.get("body")
        if body is None:
            body = collect(plan.body(context)) if plan.body else whole
        rich_text = None
        if rich is not None:
            rich_text = captured.get(rich)
            if rich_text is None:
                rich_text = collect(plan.blocks[rich][0](context))
        return title, body, rich_text

    def render_string(self, source: str, context: Mapping[str, Any]) -> str:
        """Render a short inline template such as a dedupe key ``"{{ data.user.id }}"``; the result is stripped."""
        template = self._inline.get(source)
        if template is None:
            template = self._compile_inline(source)
        if isinstance(template, TemplateError):
            raise TemplateError(template.reason, template=template.template, line=template.line)
        variables = {**self._globals, **context}
        token = _budget.set(Budget.start(self.time_limit, self.output_limit))
        try:
            return collect(
                template.root_render_func(_new_context(template, variables, self._globals, template.blocks))
            ).strip()
        except Exception as exc:
            raise self._explain(exc, context, label=_inline_label(source), source=source) from None
        finally:
            _budget.reset(token)

    def _compile_inline(self, source: str) -> Template | TemplateError:
        compiled: Template | TemplateError
        try:
            compiled = self._env.from_string(source)
        except Exception as exc:
            compiled = self._explain(exc, {}, label=_inline_label(source), source=source)
        if len(self._inline) >= _INLINE_CACHE_SIZE:
            # Inline sources come from the configuration, so this only trips on misuse; drop the oldest.
            del self._inline[next(iter(self._inline))]
        self._inline[source] = compiled
        return compiled

    # -- errors ------------------------------------------------------------------------------

    def _explain(
        self, exc: BaseException, context: Mapping[str, Any], *, label: str | None, source: str | None = None
    ) -> TemplateError:
        """Turn any exception from compiling or rendering into a TemplateError naming template, line and cause."""
        if isinstance(exc, TemplateError):
            return exc
        if isinstance(exc, jexc.TemplateSyntaxError):
            message = exc.message or "syntax error"
            unknown = re.match(r"No (filter|test) named '([^']+)'", message)
            if unknown:
                known = self._env.filters if unknown.group(1) == "filter" else self._env.tests
                message = f"no {unknown.group(1)} named '{unknown.group(2)}'{did_you_mean(unknown.group(2), known)}"
            return TemplateError(message, template=exc.name or label, line=exc.lineno)
        template, line = _locate(exc.__traceback__)
        where = (template.name if template is not None else None) or label
        if isinstance(exc, jexc.UndefinedError):
            message = self._undefined_message(exc, context, where, line, source if where == label else None)
        elif isinstance(exc, LimitExceeded):
            message = str(exc.message)
        elif isinstance(exc, jexc.SecurityError):
            message = f"blocked by the sandbox: {exc}"
        elif isinstance(exc, OverflowError) and "MAX_RANGE" in str(exc):
            message = "range() too big: the sandbox allows at most 100,000 items"
        elif isinstance(exc, jexc.TemplateNotFound):
            message = f"template '{exc.name}' not found"
        elif isinstance(exc, _FilterFailed):
            cause = exc.cause
            detail = str(cause) if isinstance(cause, ValueError) else f"{type(cause).__name__}: {cause}"
            message = f"filter '{exc.name}': {detail}"
        elif isinstance(exc, UnicodeDecodeError):
            message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        else:
            message = f"{type(exc).__name__}: {exc}"
        return TemplateError(message, template=where, line=line)

    def _undefined_message(
        self,
        exc: jexc.UndefinedError,
        context: Mapping[str, Any],
        file: str | None,
        line: int | None,
        source: str | None,
    ) -> str:
        undefined = _failed_undefined(exc.__traceback__)
        if undefined is None or undefined._undefined_hint:
            return str(exc.message)
        key = undefined._undefined_name
        owner = undefined._undefined_obj
        if owner is missing:
            return f"'{key}' is undefined{did_you_mean(str(key), context)}"
        expression = None
        try:
            tree = self._env.parse(source) if source is not None else self._parse(file) if file else None
            if tree is not None:
                expression = _owner_expression(tree, line, key)
        except Exception:  # the message is still useful without the expression
            expression = None
        subject = f"'{expression}'" if expression else f"'{type(owner).__name__} object'"
        if isinstance(key, str):
            message = f"{subject} has no attribute '{key}'"
            if isinstance(owner, Mapping):
                message += did_you_mean(key, [k for k in owner if isinstance(k, str)])
            return message
        return f"{subject} has no element {key!r}"

    # -- static checks -------------------------------------------------------------------------

    def parsed(self, name: str, channel_type: str | None = None) -> tuple[str, nodes.Template]:
        """The file ``name`` renders from for ``channel_type``, and its syntax tree (router.templating.field_checks).

        ``name`` is a NAME, resolved as :meth:`render` resolves it, or a file as extends and
        include name it (``base.j2``). Raises TemplateError; the tree is not kept.
        """
        file = name if name.endswith(SUFFIX) else self._file_for(name, channel_type)
        try:
            return file, self._parse(file)
        except Exception as exc:
            raise self._explain(exc, {}, label=file) from None
        finally:
            self._trees.pop(file, None)  # compile_all dropped the trees once done; keep it that way


def _unmarshal(data: bytes) -> types.CodeType | None:
    try:
        code = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def _prepare(env: Environment, item: tuple[str, str, str | None]) -> tuple[Any, bytes]:
    """Parse and compile one template (perhaps in a worker process): its facts' dump and its code, marshalled.

    Marshalled, the code is a third of the size of the code object, and made into one only when
    the template is loaded: a thousand code objects alive at once would fragment the heap.
    """
    file, source, filename = item
    tree = env.parse(source, file)
    facts = _Facts.of(tree)  # before compiling: the limits' transformer rewrites the tree
    return facts.dump(), marshal.dumps(env.compile(tree, file, filename))


def _inline_label(source: str) -> str:
    shown = source if len(source) <= 60 else source[:59] + "…"
    return f"inline template {shown!r}"
