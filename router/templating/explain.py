"""Errors from compiling or rendering a template, in words: which template, which line, what was missing and what was meant."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import jinja2.exceptions as jexc
from jinja2 import Environment, Template, Undefined, nodes
from jinja2.utils import missing

from router.core.errors import TemplateError
from router.core.suggest import did_you_mean
from router.templating.limits import LimitExceeded
from router.templating.sandbox import FilterFailed


def dotted_path(node: nodes.Node) -> str | None:
    """The source text of a variable path such as ``data.user`` or ``e["id"]``, if it is one."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        inner = dotted_path(node.node)
        return f"{inner}.{node.attr}" if inner else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        inner = dotted_path(node.node)
        return f"{inner}[{node.arg.value!r}]" if inner else None
    return None


def owner_expression(tree: nodes.Template, line: int | None, key: Any) -> str | None:
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
        if hit and (text := dotted_path(node.node)):
            return text
    return None


def locate(tb: TracebackType | None) -> tuple[Template | None, int | None]:
    """The innermost compiled-template frame of a traceback and its line in the template source."""
    found: tuple[Template | None, int | None] = (None, None)
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            found = (template, template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


def failed_undefined(tb: TracebackType | None) -> Undefined | None:
    """The Undefined whose use raised, read from the raising frame (Jinja's exception does not carry it)."""
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Undefined):
            found = candidate
        tb = tb.tb_next
    return found


def explain(
    exc: BaseException,
    context: Mapping[str, Any],
    *,
    env: Environment,
    parse: Callable[[str], nodes.Template],
    label: str | None,
    source: str | None = None,
) -> TemplateError:
    """Turn any exception from compiling or rendering into a TemplateError naming template, line and cause.

    ``env`` names the filters and tests a misspelt one is compared with; ``parse`` gives the
    tree of a template file, to name the expression whose attribute was missing.
    """
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, jexc.TemplateSyntaxError):
        message = exc.message or "syntax error"
        unknown = re.match(r"No (filter|test) named '([^']+)'", message)
        if unknown:
            known = env.filters if unknown.group(1) == "filter" else env.tests
            message = f"no {unknown.group(1)} named '{unknown.group(2)}'{did_you_mean(unknown.group(2), known)}"
        return TemplateError(message, template=exc.name or label, line=exc.lineno)
    template, line = locate(exc.__traceback__)
    where = (template.name if template is not None else None) or label
    if isinstance(exc, jexc.UndefinedError):
        message = _undefined_message(exc, context, where, line, source if where == label else None, env, parse)
    elif isinstance(exc, LimitExceeded):
        message = str(exc.message)
    elif isinstance(exc, jexc.SecurityError):
        message = f"blocked by the sandbox: {exc}"
    elif isinstance(exc, OverflowError) and "MAX_RANGE" in str(exc):
        message = "range() too big: the sandbox allows at most 100,000 items"
    elif isinstance(exc, jexc.TemplateNotFound):
        message = f"template '{exc.name}' not found"
    elif isinstance(exc, FilterFailed):
        cause = exc.cause
        detail = str(cause) if isinstance(cause, ValueError) else f"{type(cause).__name__}: {cause}"
        message = f"filter '{exc.name}': {detail}"
    elif isinstance(exc, UnicodeDecodeError):
        message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return TemplateError(message, template=where, line=line)


def _undefined_message(
    exc: jexc.UndefinedError,
    context: Mapping[str, Any],
    file: str | None,
    line: int | None,
    source: str | None,
    env: Environment,
    parse: Callable[[str], nodes.Template],
) -> str:
    undefined = failed_undefined(exc.__traceback__)
    if undefined is None or undefined._undefined_hint:
        return str(exc.message)
    key = undefined._undefined_name
    owner = undefined._undefined_obj
    if owner is missing:
        return f"'{key}' is undefined{did_you_mean(str(key), context)}"
    expression = None
    try:
        tree = env.parse(source) if source is not None else parse(file) if file else None
        if tree is not None:
            expression = owner_expression(tree, line, key)
    except Exception:  # the message is still useful without the expression
        expression = None
    subject = f"'{expression}'" if expression else f"'{type(owner).__name__} object'"
    if isinstance(key, str):
        message = f"{subject} has no attribute '{key}'"
        if isinstance(owner, Mapping):
            message += did_you_mean(key, [k for k in owner if isinstance(k, str)])
        return message
    return f"{subject} has no element {key!r}"
