"""The grammar of event-type patterns (a rule's ``on``), and what a pattern matches.

Segments are separated by ``.`` or ``/`` (Inngest-style types: ``space/completed.planet`` has
the segments ``space``, ``completed`` and ``planet``). ``*`` matches exactly one segment;
``**`` matches any number of segments, including none (RabbitMQ's ``#``): ``a.**`` matches
``a``, ``a.b`` and ``a.b.c``; ``challenging/**`` matches ``challenging`` and every
``challenging/...`` type; ``**`` alone matches every type. The separator written before a
wildcard is the one the type must have there: ``a.*`` matches ``a.b``, not ``a/b``, and
``a/**`` matches ``a/b.c``, not ``a.b``. Wildcards are whole segments (``a*`` is an error),
a pattern's segments are never empty. A list of patterns matches if any of them does.

Here, in ``core``, so that configuration validation and matching read one grammar; the rule
index's trie (:mod:`router.matching.trie`) is the fast form of :func:`pattern_matches`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A literal segment: the characters an event type may hold (see router.core.events), less the separators.
_LITERAL_RE = re.compile(r"[^\s./*#\x00-\x1f\x7f]+")
# '.' and '/' both end a segment; the separator is kept with the segment it precedes.
_SEPARATOR_RE = re.compile(r"([./])")


def pattern_error(pattern: str) -> str | None:
    """None if ``pattern`` is a valid ``on`` pattern, else a message saying what is wrong."""
    if not isinstance(pattern, str):
        return f"a pattern must be a string, got {type(pattern).__name__}"
    if not pattern:
        return "a pattern cannot be empty (use '**' to match every event type)"
    for segment in _SEPARATOR_RE.split(pattern)[::2]:
        if not segment:
            return (
                f"pattern '{pattern}' has an empty segment"
                " (two separators ('.' or '/') in a row, or a leading or trailing one)"
            )
        if segment in ("*", "**"):
            continue
        if segment == "#":
            return f"pattern '{pattern}': '#' is RabbitMQ syntax; write '**' for any number of segments"
        if "*" in segment:
            return f"pattern '{pattern}': '*' and '**' must be whole segments, not part of '{segment}'"
        if _LITERAL_RE.fullmatch(segment) is None:
            return f"pattern '{pattern}': segment '{segment}' contains whitespace, '#' or a control character"
    return None


def tokens(text: str) -> list[str]:
    """``text`` as segments, each with the separator before it (``"."`` for the first).

    ``"space/completed.planet"`` -> ``[".space", "/completed", ".planet"]``: a wildcard token
    such as ``"/**"`` matches only where the type has that separator.
    """
    parts = _SEPARATOR_RE.split(text)
    return ["." + parts[0], *(parts[i] + parts[i + 1] for i in range(1, len(parts), 2))]


def is_wildcard(pattern: str) -> bool:
    """Whether ``pattern`` has a ``*`` or ``**`` segment (else it names one exact type)."""
    return any(token[1:] in ("*", "**") for token in tokens(pattern))


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` matches ``pattern`` (the reference semantics; slow but plain)."""
    return _glob(pattern_segments(pattern), tokens(event_type))


def pattern_segments(pattern: str) -> list[str]:
    """``pattern`` as tokens, runs of ``**`` collapsed (``a.**.**`` is ``a.**``)."""
    # '**.**' means what '.**' means; collapsing them keeps backtracking from compounding.
    segments: list[str] = []
    for segment in tokens(pattern):
        if not (segment[1:] == "**" and segments and segments[-1] == segment):
            segments.append(segment)
    return segments


def _glob(pattern: list[str], segments: list[str]) -> bool:
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    separator, text = head[0], head[1:]
    if text == "**":
        # None, or a first segment after this separator and then any segments at all.
        if _glob(rest, segments):
            return True
        if not segments or segments[0][0] != separator:
            return False
        return any(_glob(rest, segments[i:]) for i in range(1, len(segments) + 1))
    if not segments:
        return False
    matched = segments[0][0] == separator if text == "*" else head == segments[0]
    return matched and _glob(rest, segments[1:])


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """``pattern`` as a predicate on event types, via one regex (for scans; the index uses a trie)."""
    # Every segment is matched with its separator in front, against "." + type, so that '**'
    # can stand for zero segments without leaving a dangling separator behind.
    parts = []
    for segment in pattern_segments(pattern):
        separator, text = re.escape(segment[0]), segment[1:]
        if text == "**":
            parts.append(rf"(?:{separator}[^./]*(?:[./][^./]*)*)?")
        elif text == "*":
            parts.append(rf"{separator}[^./]*")
        else:
            parts.append(re.escape(segment))
    fullmatch = re.compile("".join(parts)).fullmatch
    return lambda event_type: fullmatch("." + event_type) is not None
