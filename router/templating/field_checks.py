"""`router check`: templates that read a field their event's schema does not declare.

For each rule whose ``on`` lists only exact event types, all with a declared schema (the
``events:`` section, router.config.event_schemas), the rule's template and its per-channel-type overrides
are parsed, following constant ``extends`` and ``include`` names, and every chain of constant
attribute or item lookups rooted at ``data`` or ``event.data`` is compared with each event's
declared fields. A read that is not declared is reported with its template and line: that
is how a typo (``data.planetNmae``) is caught before the first event arrives, even under
``{% if data.planetNmae is defined %}``, which would otherwise hide it for ever.

Deliberately loose, so that it never reports a read that is fine: a lookup with a computed
key, anything under ``any``, ``object``, an array or a scalar, an open JSON Schema, and
names bound in the template (loop variables, ``set``, macro arguments) are not followed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from jinja2 import nodes

from router.config.event_schemas import EventSchema, Fields, SpecPath, show_path
from router.config.models import RouterConfig, Rule
from router.core.errors import TemplateError
from router.core.suggest import closest
from router.templating.templates import Templates

_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
"""``data.get("x")`` reads field x; ``data.items()`` reads the whole mapping."""

_BINDERS = (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro, nodes.CallBlock, nodes.With)


@dataclass(frozen=True)
class Read:
    """A constant lookup chain under ``data`` found in a template file."""

    file: str
    line: int
    path: SpecPath  # keys under data


def check_template_fields(
    config: RouterConfig, schemas: Mapping[str, EventSchema], templates: Templates
) -> list[TemplateError]:
    """Every read of an undeclared field by the template of a rule whose events all have schemas."""
    if not schemas:
        return []
    parsed: dict[tuple[str, str | None], _Parsed | None] = {}  # one parse per file, however many rules use it
    found: dict[tuple[str, int, str], TemplateError] = {}
    for rule in config.rules:
        checked = _schemas_of(rule, schemas)
        if not checked or rule.template is None:
            continue
        for read in _reads_of_rule(rule, config, templates, parsed):
            for schema in checked:
                undeclared = _undeclared(schema.fields, read.path)
                if undeclared is None:
                    continue
                depth, known = undeclared
                shown = show_path(("data", *read.path[: depth + 1]))
                hint = closest(str(read.path[depth]), known)
                message = f"reads {shown}, which event '{schema.type}' does not declare"
                if hint:
                    message += f" (did you mean '{hint}'?)"
                found.setdefault(
                    (read.file, read.line, shown), TemplateError(message, template=read.file, line=read.line)
                )
                break  # one event that lacks it is enough to say so
    return [found[key] for key in sorted(found)]


def _schemas_of(rule: Rule, schemas: Mapping[str, EventSchema]) -> list[EventSchema]:
    """The schemas of the events ``rule`` fires on, when every one is exact and declared; else none."""
    checked: list[EventSchema] = []
    for pattern in rule.on:
        schema = schemas.get(pattern)
        if schema is None or "*" in pattern:
            return []  # a wildcard or an undeclared type: its events may carry any field
        if schema.fields is not None:
            checked.append(schema)
    return checked


@dataclass(frozen=True)
class _Parsed:
    file: str
    reads: list[Read]
    references: list[str]  # templates it extends or includes


def _reads_of_rule(
    rule: Rule, config: RouterConfig, templates: Templates, cache: dict[tuple[str, str | None], _Parsed | None]
) -> Iterator[Read]:
    assert rule.template is not None
    types = sorted({config.channels[c].type for c in rule.channels if c in config.channels})
    visited: set[str] = set()
    pending: list[tuple[str, str | None]] = [(rule.template, t) for t in types] or [(rule.template, None)]
    while pending:
        key = pending.pop()
        if key not in cache:
            try:
                file, tree = templates.parsed(*key)
                cache[key] = _Parsed(file, list(_reads(file, tree)), list(_referenced(tree)))
            except TemplateError:
                cache[key] = None  # a missing or broken file is reported by compiling the templates
        found = cache[key]
        if found is None or found.file in visited:
            continue
        visited.add(found.file)
        yield from found.reads
        pending.extend((target, None) for target in found.references)


def _referenced(tree: nodes.Template) -> Iterator[str]:
    """Constant names of the templates ``tree`` extends or includes (they render with its context)."""
    for node in tree.find_all((nodes.Extends, nodes.Include)):
        assert isinstance(node, (nodes.Extends, nodes.Include))
        target = node.template
        values = target.items if isinstance(target, (nodes.List, nodes.Tuple)) else [target]
        for value in values:
            if isinstance(value, nodes.Const) and isinstance(value.value, str):
                yield value.value


def _reads(file: str, tree: nodes.Template) -> Iterator[Read]:
    bound = _bound_names(tree)
    roots = {name for name in ("data", "event") if name not in bound}
    if not roots:
        return
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr in _DICT_METHODS:
            owner = _chain(node.node.node, roots)
            if owner is not None:
                path: SpecPath = owner
                first = node.args[0] if node.args else None
                if node.node.attr == "get" and isinstance(first, nodes.Const) and isinstance(first.value, str):
                    path = (*owner, first.value)
                if path:
                    yield Read(file, node.lineno, path)
                stack.extend(_call_arguments(node))
                continue
        if isinstance(node, (nodes.Getattr, nodes.Getitem)):
            chain = _chain(node, roots)
            if chain is not None:
                if chain:
                    yield Read(file, node.lineno, chain)
                continue  # a constant chain holds no other expression
        stack.extend(node.iter_child_nodes())


def _call_arguments(call: nodes.Call) -> Iterable[nodes.Node]:
    extra = [arg for arg in (call.dyn_args, call.dyn_kwargs) if arg is not None]
    return [*call.args, *call.kwargs, *extra]


def _chain(node: nodes.Node, roots: set[str]) -> SpecPath | None:
    """The keys under data of a constant chain (``data.a["b"][0]``, ``event.data.a``), else None."""
    keys: list[str | int] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            key: object = node.attr
        elif isinstance(node.arg, nodes.Const):
            key = node.arg.value
        else:
            return None  # a computed key: nothing to say about it
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            return None
        keys.append(key)
        inner = node.node
        if isinstance(inner, nodes.Name) and inner.name == "event" and "event" in roots:
            if key != "data":
                return None  # event.type, event.id...: not a field of data
            keys.pop()
            return tuple(reversed(keys))
        node = inner
    if isinstance(node, nodes.Name) and node.name == "data" and "data" in roots:
        return tuple(reversed(keys))
    return None


def _bound_names(tree: nodes.Template) -> set[str]:
    """Names the template binds itself (set, for, macro and call arguments, with)."""
    bound: set[str] = set()
    for node in tree.find_all(_BINDERS):
        if isinstance(node, (nodes.Macro, nodes.CallBlock)):
            bound.update(arg.name for arg in node.args)
            continue
        if isinstance(node, nodes.With):
            targets: list[nodes.Node] = list(node.targets)
        elif isinstance(node, (nodes.Assign, nodes.AssignBlock, nodes.For)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            bound.update(name.name for name in target.find_all(nodes.Name))
            if isinstance(target, nodes.Name):
                bound.add(target.name)
    return bound


def _undeclared(fields: Fields | None, path: SpecPath) -> tuple[int, list[str]] | None:
    """Where ``path`` leaves the declared fields: (index of the first undeclared key, the keys declared there)."""
    current = fields
    for depth, key in enumerate(path):
        if current is None or not isinstance(key, str):
            return None  # below anything that is not a declared mapping: not checked
        if key not in current:
            return depth, sorted(current)
        current = current[key]
    return None
