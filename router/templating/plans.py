"""How one (template, channel type) renders, resolved once (:class:`Plan`), and what a render gives (:class:`Rendered`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Template
from jinja2.runtime import Context, new_context

from router.templating.limits import collect

BlockFn = Callable[[Context], Iterator[str]]

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


@dataclass(frozen=True, slots=True)
class Plan:
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


def new_render_context(
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


def render_via_root(plan: Plan, context: Context, rich: str | None) -> tuple[str, str, str | None]:
    """Render through the root function (top-level code runs), capturing the title, body and native blocks."""
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
