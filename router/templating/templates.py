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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2.exceptions as jexc
from jinja2 import StrictUndefined, Template, nodes

from router.core.errors import TemplateError
from router.core.suggest import did_you_mean
from router.templating.cache import Bundle, Entry, TemplateCache, environment_tag
from router.templating.compile_workers import SharedMap
from router.templating.compiled import Facts, prepare, unmarshal
from router.templating.context import EventView, build_context
from router.templating.explain import explain
from router.templating.filters import truncate_text
from router.templating.limits import (
    OUTPUT_LIMIT,
    TIME_LIMIT,
    Budget,
    check_printable,
    collect,
    guard_filters,
    guard_globals,
)
from router.templating.limits import current as _budget
from router.templating.native import RichPayload, build_payload
from router.templating.plans import RICH_BLOCKS, BlockFn, Plan, Rendered, new_render_context, render_via_root
from router.templating.sandbox import Loader, Sandbox, guard_filter

__all__ = ["RICH_BLOCKS", "SUFFIX", "EventView", "Rendered", "Templates", "build_context"]

SUFFIX = ".j2"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # no dots: NAME.TYPE.j2 must split one way only
_INLINE_CACHE_SIZE = 1024


@dataclass(slots=True)
class _Started:
    """What :meth:`Templates.start_compiling` found and started, for :meth:`Templates.compile_all`."""

    files: list[str]  # every template file, sorted
    known: dict[str, str]  # file -> checksum, of what the cache holds
    checksums: dict[str, str]  # file -> checksum of its source (with a cache)
    todo: list[tuple[str, str, str | None]]  # (file, source, filename) being compiled
    shared: SharedMap  # compiling them


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
        self._facts: dict[str, Facts] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = TemplateCache(self.cache_dir, "") if self.cache_dir is not None else None  # tagged below
        self._loader = Loader(self.folder, self._trees)
        self._env = Sandbox(
            loader=self._loader,
            undefined=StrictUndefined,
            autoescape=False,  # chat and email text, not HTML
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # a reload builds a new Templates; never stat files per render
            cache_size=-1,
            finalize=check_printable,  # {{ a_list }} builds its whole text at once: sized first
        )
        for name, function in (filters or {}).items():
            self._env.filters[name] = guard_filter(name, function)
        guard_filters(self._env.filters)
        guard_globals(self._env.globals)
        if self._cache is not None:
            # Tagged once the filters are in: their names are part of what an entry was compiled for.
            self._cache.tag = environment_tag(self._env.filters, self._env.tests)
        self._globals = dict(self._env.globals)
        self._files = self._list_files()
        self._plans: dict[tuple[str, str | None], Plan | TemplateError] = {}
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
        shared = SharedMap(functools.partial(prepare, self._env), todo, processes=processes)
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
                    prepared, code = (fresh[0], unmarshal(fresh[1])), fresh[1]
                # Read one at a time, as it is loaded; checked again: another process may have
                # rewritten the cache since start_compiling.
                elif cached is not None and file in checksums and cached.checksum(file) == checksums[file]:
                    prepared, code = (cached.facts(file), cached.code(file)), b""
                if prepared is not None and prepared[1] is not None:
                    facts = Facts.read(prepared[0])
                    self._loader.precompiled[file] = prepared[1]
                if facts is None:  # compiled here: parsed first, and the compiler reuses the tree
                    self._loader.precompiled.pop(file, None)
                    code = None
                    facts = Facts.of(self._parse(file))
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

    def _facts_of(self, file: str) -> Facts:
        facts = self._facts.get(file)
        if facts is None:
            facts = self._facts[file] = Facts.of(self._parse(file))
        return facts

    def _missing_references(self, file: str, facts: Facts) -> list[TemplateError]:
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

    def _plan(self, name: str, channel_type: str | None) -> Plan | TemplateError:
        key = (name, channel_type)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        file = f"{name}{SUFFIX}"
        plan: Plan | TemplateError
        try:
            file = self._file_for(name, channel_type)
            plan = self._resolve(file)
        except TemplateError as exc:
            plan = exc
        except Exception as exc:
            plan = self._explain(exc, {}, label=file)
        self._plans[key] = plan
        return plan

    def _resolve(self, file: str) -> Plan:
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
        return Plan(leaf, blocks, title, body, dict(leaf.globals), via_root=not simple or body is None, origins=origins)

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
            context_ = new_render_context(plan.template, variables, plan.globals, {})  # blocks are set below
            if plan.via_root or body_block is None:
                title, body, rich_text = render_via_root(plan, context_, rich)
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
                template.root_render_func(new_render_context(template, variables, self._globals, template.blocks))
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

    def _explain(
        self, exc: BaseException, context: Mapping[str, Any], *, label: str | None, source: str | None = None
    ) -> TemplateError:
        return explain(exc, context, env=self._env, parse=self._parse, label=label, source=source)

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


def _inline_label(source: str) -> str:
    shown = source if len(source) <= 60 else source[:59] + "…"
    return f"inline template {shown!r}"
