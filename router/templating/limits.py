"""Time and size limits on one template render: templates are untrusted code running on untrusted data.

Jinja's sandbox stops attribute escapes and caps ``range()`` at 100,000 items, but a template
can still loop for minutes (nested loops) or build a gigabyte (``'x' * 10**9``) on the event
loop. A render therefore runs under a :class:`Budget` (a deadline and an output size, set in a
context variable by the renderer) that is checked:

- at every call (the sandbox's hook: functions, methods, macros, ``super()``),
- at every iteration of a ``{% for %}`` loop and every ``~`` concatenation (the compiled
  template is rewritten to route them through guards, see :class:`LimitTransformer`),
- on each chunk of output,
- *before* the operations that can build a huge value in one step (``*`` of sequences and
  of numbers, ``**``, ``+``, ``%``-formatting, ``str.format`` widths,
  ``center``/``ljust``/``replace``/``join``... and the filters ``center``, ``indent``,
  ``format``, ``replace``, ``join`` (separators and items), ``wordwrap``, ``batch``
  (its fill), ``slice``, ``tojson`` (its indentation), the global ``lipsum``, and printing a
  list or mapping with ``{{ }}``, ``~``, ``%``/``format()`` or a filter that turns its whole
  input into text (``string``, ``pprint``, ``tojson``, ``upper``...)),
- at every step of the ``sum`` filter, which is replaced (Python's ``sum`` of lists is
  quadratic).

Nothing is killed: the check raises :class:`LimitExceeded` in the rendering code itself, which
the renderer reports as a TemplateError naming the template and line.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeGuard

import jinja2.exceptions as jexc
from jinja2 import nodes, pass_environment
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.filters import make_attrgetter
from jinja2.runtime import Undefined
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from router.core.durations import format_duration

TIME_LIMIT = 1.0
"""Seconds one render may take."""
OUTPUT_LIMIT = 1_000_000
"""Characters one render may produce, and the size of any one string or list it builds."""
POWER_BITS_LIMIT = 65_536
"""``x ** y`` results larger than this many bits (about 10**19728) are refused."""

ITER_FILTER = "_router_guard_iter"
CONCAT_FILTER = "_router_guard_concat"


class LimitExceeded(jexc.TemplateRuntimeError):
    """A render passed its time or size limit."""


@dataclass(slots=True)
class Budget:
    deadline: float
    time_limit: float
    output_limit: int

    @classmethod
    def start(cls, time_limit: float = TIME_LIMIT, output_limit: int = OUTPUT_LIMIT) -> Budget:
        return cls(time.monotonic() + time_limit, time_limit, output_limit)


current: ContextVar[Budget | None] = ContextVar("router_template_budget", default=None)


def check_time() -> None:
    """Raise LimitExceeded when the render in progress is past its deadline."""
    budget = current.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise LimitExceeded(
            f"rendering took longer than {format_duration(budget.time_limit)}, the limit for one render "
            "(a loop over too much?)"
        )


def _size_limit() -> int:
    budget = current.get()
    return budget.output_limit if budget is not None else OUTPUT_LIMIT


def check_size(size: int, what: str) -> None:
    """Raise LimitExceeded when ``what`` would be ``size`` characters (or items), over the limit."""
    limit = _size_limit()
    if size > limit:
        raise LimitExceeded(f"{what} would make {size:,} characters or items, over the limit of {limit:,}")


_BATCH = 256  # chunks joined at a time: the checks run per batch, the joining at C speed


def collect(chunks: Iterable[str]) -> str:
    """Join rendered chunks, checking the output size and the deadline as they come."""
    budget = current.get()
    if budget is None:
        return "".join(chunks)
    iterator = iter(chunks)
    pieces: list[str] = []
    size = 0
    limit = budget.output_limit
    while True:
        batch = list(islice(iterator, _BATCH))
        piece = "".join(batch)
        size += len(piece)
        if size > limit:
            raise LimitExceeded(f"the output passed {limit:,} characters, the limit for one render")
        if len(batch) < _BATCH:  # the end (most renders: the first batch)
            if not pieces:
                return piece
            pieces.append(piece)
            return "".join(pieces)
        pieces.append(piece)
        check_time()


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_SEQUENCES = (str, list, tuple, bytes)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``+`` and ``%`` whose result would be over the size limit."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, _SEQUENCES) and _is_int(times):
                check_size(len(sequence) * times, f"'*' repeating {len(sequence):,} by {times:,}")
        if _is_int(left) and _is_int(right):
            # Squaring a big number repeatedly ({% set b = a*a %}) doubles its size each time.
            product_bits = left.bit_length() + right.bit_length()
            if product_bits > POWER_BITS_LIMIT:
                raise LimitExceeded(
                    f"'*' would make a number of about {product_bits:,} bits, over {POWER_BITS_LIMIT:,}"
                )
    elif operator == "**":
        if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
            bits = right * math.log2(abs(left))
            if bits > POWER_BITS_LIMIT:
                raise LimitExceeded(f"'**' would make a number of about {int(bits):,} bits, over {POWER_BITS_LIMIT:,}")
    elif operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            check_size(len(left) + len(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        check_printable(right)  # "%s" % ([s] * 300,) prints the whole list
        check_percent_format(left, right)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(template: str, values: Any) -> None:
    """Refuse ``"%999999999d" % x`` (and ``*`` widths taken from the values) before it builds."""
    star = False
    for match in _PERCENT_SPEC.finditer(template):
        for group in match.groups():
            if group == "*":
                star = True
            elif group is not None:
                check_size(int(group), "a '%' format width")
    if star:
        items = values if isinstance(values, tuple) else (values,)
        for item in items:
            if _is_int(item):
                check_size(item, "a '%' format width")


_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}|\{[^{}]*:[^{}]*\{")


def check_brace_format(template: str, args: Iterable[Any]) -> None:
    """Refuse ``"{:999999999}".format(x)`` and nested widths from big arguments."""
    args = list(args)
    for item in args:
        check_printable(item)  # "{}".format([s] * 300) prints the whole list
    nested = False
    for match in _BRACE_SPEC.finditer(template):
        spec = match.group(1)
        if spec is None:
            nested = True
            continue
        for number in re.findall(r"\d+", spec):
            check_size(int(number), "a format width")
    if nested:
        for item in args:
            if _is_int(item):
                check_size(item, "a format width")


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Check the deadline, and refuse string methods whose result would be over the size limit."""
    check_time()
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width")
        if _is_int(width):
            check_size(width, f"str.{name}")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(size):
            check_size(len(owner) + owner.count("\t") * size, "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        check_size(_replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1), "str.replace")
    elif name == "join" and args and isinstance(args[0], (list, tuple)):
        items = args[0]
        check_size(len(owner) * max(len(items) - 1, 0) + sum(len(i) for i in items if isinstance(i, str)), "str.join")
    elif name in ("format", "format_map"):
        check_brace_format(owner, (*args, *kwargs.values()))


def _replaced_size(text: str, old: str, new: str, count: Any) -> int:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if _is_int(count) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


# -- guarded filters ------------------------------------------------------------------------


def _lines(value: Any) -> int:
    return str(value).count("\n") + 1


def _pre_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    if _is_int(width):
        check_size(width, "the center filter")


def _pre_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    step = width if _is_int(width) else len(str(width))
    check_size(len(str(value)) + step * _lines(value), "the indent filter")


def _pre_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent_format(str(value), kwargs or args)


def _pre_replace(eval_ctx: Any, value: Any, old: Any = "", new: Any = "", count: Any = None, **_: Any) -> None:
    check_size(_replaced_size(str(value), str(old), str(new), count), "the replace filter")


def _pre_join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None, *_: Any, **__: Any) -> None:
    if hasattr(value, "__len__") and not isinstance(value, (str, Undefined)):
        separators = len(str(d)) * len(value)
        check_size(separators, "the join filter")
        if attribute is None and isinstance(value, (list, tuple)):
            # The items count too: ([s] * 300) | join is 300 times s, refused before it is built.
            check_size(separators + text_size(value, _size_limit() - separators), "the join filter")


def _pre_batch(value: Any, linecount: Any = 0, fill_with: Any = None, *_: Any, **__: Any) -> None:
    if fill_with is not None and _is_int(linecount):
        check_size(linecount, "the batch filter's fill")  # the last batch is filled to linecount


def _pre_slice(eval_ctx: Any, value: Any, slices: Any = 0, *_: Any, **__: Any) -> None:
    if _is_int(slices):
        check_size(slices, "the slice filter")  # one list per slice, even empty


def _pre_tojson(eval_ctx: Any, value: Any, indent: Any = None, *_: Any, **__: Any) -> None:
    width = indent if _is_int(indent) else len(indent) if isinstance(indent, str) else 0
    if width > 0:
        check_size(_json_layout_size(value, width, _size_limit()), "the tojson filter's indentation")


def _pre_wordwrap(
    eval_ctx: Any, value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *_: Any, **__: Any
) -> None:
    if wrapstring is not None:
        check_size(len(str(value)) * (len(str(wrapstring)) + 1), "the wordwrap filter")


_PRECHECKS: dict[str, Callable[..., None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "format": _pre_format,
    "replace": _pre_replace,
    "join": _pre_join,
    "wordwrap": _pre_wordwrap,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "tojson": _pre_tojson,
}


@pass_environment
def guarded_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's ``sum``, one addition at a time: each checked like ``+`` and against the deadline.

    Python's ``sum`` of lists (``sum(start=[])``) copies the total at every step: quadratic, and
    out of reach of every other check.
    """
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        check_binop("+", total, item)
        total = total + item
        check_time()
    return total


_REPLACED: dict[str, Callable[..., Any]] = {"sum": guarded_sum}

LIPSUM_WORD = 13
"""Characters one lorem-ipsum word may take with its separator (the longest is 12)."""


def guarded_lipsum(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> Any:
    """The global ``lipsum``, refused when ``n`` paragraphs of up to ``max`` words could pass the size limit."""
    if _is_int(n) and _is_int(max):
        check_size(n * (max + 1) * LIPSUM_WORD, "lipsum()")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def guard_globals(globals_: dict[str, Any]) -> None:
    """Replace the built-in globals whose one call can outgrow the limits (``lipsum``)."""
    if globals_.get("lipsum") is generate_lorem_ipsum:
        globals_["lipsum"] = guarded_lipsum


def text_size(value: Any, limit: int) -> int:
    """About how many characters ``str(value)`` makes (containers: their items' text), stopping past ``limit``.

    Printing a container (``{{ [s] * 300 }}``, ``x ~ [s] * 300``) builds its whole text at once.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif _is_int(item):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total


def _json_layout_size(value: Any, width: int, limit: int) -> int:
    """Characters of line breaks and indentation ``json.dumps(value, indent=width)`` adds, stopping past ``limit``."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        children = list(item.values()) if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else ()
        if not children:
            continue
        # Each child on its own line one level in, then the closing bracket back at this level.
        total += len(children) * (1 + (depth + 1) * width) + 1 + depth * width
        stack.extend((child, depth + 1) for child in children)
    return total


_CONTAINERS = (list, tuple, set, frozenset, dict)


def check_printable(value: Any) -> Any:
    """``value`` if printing it stays within the size limit (``{{ x }}``'s finalize hook).

    Called for every ``{{ }}``: strings and numbers, nearly every value, leave at the first test.
    """
    if value.__class__ is str or not isinstance(value, _CONTAINERS):
        return value
    limit = _size_limit()
    check_size(text_size(value, limit), "printing this value")
    return value


# Built-in filters that turn their whole input into text first (``([s] * 300) | string``); `join`
# counts its items in its own precheck.
_STRINGIFYING = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
        "replace", "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode",
        "urlize", "wordcount", "wordwrap",
    }
)  # fmt: skip


def _pre_printable(*args: Any, **kwargs: Any) -> None:
    for value in (*args, *kwargs.values()):
        check_printable(value)


def _both(first: Callable[..., None], second: Callable[..., None] | None) -> Callable[..., None]:
    if second is None:
        return first

    def check(*args: Any, **kwargs: Any) -> None:
        first(*args, **kwargs)  # before the filter's own precheck, which may call str() on the value
        second(*args, **kwargs)

    return check


def guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Put a size check in front of the built-in filters that can grow text a lot in one call."""
    for name in sorted(_STRINGIFYING | set(_PRECHECKS)):
        function = filters.get(name)
        if function is None or function is not JINJA_FILTERS.get(name) or not callable(function):
            continue  # a plugin's filter of that name has its own signature (and its own duty)
        printable = _pre_printable if name in _STRINGIFYING else None
        check = _PRECHECKS.get(name)
        combined = _both(printable, check) if printable is not None else check
        assert combined is not None
        filters[name] = _prechecked(function, combined)
    for name, replacement in _REPLACED.items():
        if filters.get(name) is JINJA_FILTERS.get(name):
            filters[name] = replacement
    filters[ITER_FILTER] = guard_iter
    filters[CONCAT_FILTER] = guard_concat


def _prechecked(function: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja_pass_arg (pass_eval_context filters)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(TypeError):  # a call the filter rejects: let the filter say why
            check(*args, **kwargs)
        return function(*args, **kwargs)

    return limited


class _Guarded:
    """An iterable whose iteration checks the deadline; its length is the wrapped one's (loop.length)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __iter__(self) -> Iterator[Any]:
        budget = current.get()
        if budget is None:
            yield from self._value
            return
        deadline = budget.deadline
        for item in self._value:
            if time.monotonic() > deadline:
                check_time()
            yield item

    def __len__(self) -> int:
        return len(self._value)


def guard_iter(value: Any) -> Any:
    """What a ``{% for %}`` loops over, checked against the deadline at each item."""
    if isinstance(value, Undefined) or not hasattr(value, "__iter__") or current.get() is None:
        return value  # Jinja reports an undefined or non-iterable value itself
    return _Guarded(value)


def guard_concat(parts: Iterable[Any]) -> str:
    """``a ~ b ~ c`` with the size of the result checked before it is built."""
    texts = [str(check_printable(part)) for part in parts]
    check_size(sum(len(text) for text in texts), "'~'")
    return "".join(texts)


class LimitTransformer(NodeTransformer):
    """Rewrites a template before compiling: loop iterables and ``~`` go through the guard filters.

    :meth:`visit` walks the tree itself: Jinja's generic transformer rebuilds every list of
    every node through several generators, which was a sixth of a template's compile time.
    The result is what ``visit_For``/``visit_Concat`` methods under Jinja's walk would make.
    """

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        return _limit(node)


def _limit_for(node: nodes.For) -> nodes.Node:
    node.iter = nodes.Filter(node.iter, ITER_FILTER, [], [], None, None, lineno=node.iter.lineno)
    return node


def _limit_concat(node: nodes.Concat) -> nodes.Node:
    items = nodes.Tuple(list(node.nodes), "load", lineno=node.lineno)
    return nodes.Filter(items, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


_MISSING = object()
_Node = nodes.Node


def _limit(node: nodes.Node) -> nodes.Node:
    """``node`` with its subtree rewritten, children first (as NodeTransformer visits them)."""
    for name in node.fields:
        value = getattr(node, name, _MISSING)
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, _Node):
                    value[i] = _limit(item)
        elif isinstance(value, _Node):
            setattr(node, name, _limit(value))
    kind = type(node)
    if kind is nodes.For:
        return _limit_for(node)  # type: ignore[arg-type]
    if kind is nodes.Concat:
        return _limit_concat(node)  # type: ignore[arg-type]
    return node
