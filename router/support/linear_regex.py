"""Regular expressions that run in time linear in their input: RE2 (the package google-re2).

Rule conditions (``regex:`` in a rule's ``when``) run on event data, which anyone allowed to
publish controls. Python's ``re`` backtracks: ``^([a-z]+)*@x$`` on 40 characters never ends,
and it runs on the event loop. RE2 guarantees time linear in the text (and bounded memory), at
the price of the constructs that need backtracking: backreferences (``\\1``, ``(?P=name)``),
lookahead and lookbehind (``(?=``, ``(?!``, ``(?<=``, ``(?<!``), possessive quantifiers and
atomic groups, ``\\Z`` (RE2 spells it ``\\z``), and repetition counts above 1000. Classes such
as ``\\d`` and ``\\w`` are ASCII in RE2 (``\\p{L}``/``\\p{Nd}`` give the Unicode ones).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported by the first compile: a configuration without `regex:` never loads it
    import re2

MAX_MEMORY = 8 << 20
"""RE2's memory budget for one compiled pattern (its default); beyond it RE2 still answers, slower."""


class LinearPattern(Protocol):
    """What callers use of a compiled pattern."""

    @property
    def pattern(self) -> str: ...

    def search(self, text: str) -> object | None: ...


class RegexError(ValueError):
    """A pattern the linear-time engine cannot take; ``str()`` is the reason, for the user."""


@functools.cache
def _re2() -> tuple[Any, Any]:
    """The re2 module and its UNANCHORED anchor (None when a release no longer has it)."""
    import re2

    return re2, getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)


def _options() -> re2.Options:
    re2, _ = _re2()
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.max_mem = MAX_MEMORY
    options.never_capture = True  # a condition asks only whether it matches
    return options


_NO_MATCH = (-1, -1)


class _Search:
    """A yes/no search on RE2's compiled object, without the wrapper's match-object machinery.

    google-re2's public ``search`` maps byte offsets back to characters for a match object:
    16 us for a 24-character address against 1.5 us here. ``tests/test_matching_regex.py``
    checks that this fast path is the one in use (it relies on the wrapper's ``_regexp``).
    """

    __slots__ = ("_anchor", "_match", "pattern")

    def __init__(self, pattern: str, match: Any, anchor: Any) -> None:
        self.pattern = pattern
        self._match = match
        self._anchor = anchor

    def search(self, text: str) -> object | None:
        # surrogatepass: JSON may hold lone surrogates ("\ud800"); RE2 just never matches those bytes.
        encoded = text.encode("utf-8", "surrogatepass")
        return True if self._match(self._anchor, encoded, 0, len(encoded))[0] != _NO_MATCH else None


def compile_linear(pattern: str) -> LinearPattern:
    """``pattern`` compiled by RE2; raises :class:`RegexError` saying why it cannot be."""
    re2, unanchored = _re2()
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        raise RegexError(_reason(pattern, exc)) from None
    match = getattr(getattr(compiled, "_regexp", None), "Match", None)
    if match is not None and unanchored is not None:
        return _Search(pattern, match, unanchored)
    return _Public(pattern, compiled)


class _Public:
    """The wrapper's public ``search`` (slower), if a google-re2 release drops the fast path."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def search(self, text: str) -> object | None:
        try:
            found: object | None = self._compiled.search(text)
        except UnicodeEncodeError:
            found = self._compiled.search(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        return found


def regex_problem(pattern: str) -> str | None:
    """None if ``pattern`` compiles in RE2, else the reason (for ``router check``)."""
    try:
        compile_linear(pattern)
    except RegexError as exc:
        return str(exc)
    return None


def _reason(pattern: str, exc: Exception) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    try:
        re.compile(pattern)
    except re.error as python_error:
        position = f" at position {python_error.pos}" if python_error.pos is not None else ""
        return f"invalid regular expression: {python_error.msg}{position}"
    return (
        f"not supported by the linear-time regex engine (RE2): {detail}; backreferences, lookahead/lookbehind, "
        "possessive quantifiers and \\Z are not available (\\z is end of text)"
    )
