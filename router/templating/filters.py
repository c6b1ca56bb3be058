"""Built-in template filters: dates, durations, numbers, truncation, markdown escaping, plurals.

Every filter is a plain function, usable from Python too. Bad input raises ``ValueError``
with a short message; the renderer turns it into a :class:`router.core.errors.TemplateError` that
names the template, the line and the filter.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sized
from datetime import UTC, date, timedelta
from datetime import datetime as _datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from router.core.durations import parse_duration

ELLIPSIS = "…"

# Epoch values above this are milliseconds (as JavaScript sends them): in seconds it would be year 5138.
_EPOCH_MS_THRESHOLD = 1e11


def _show(value: Any) -> str:
    """A short repr of a bad input for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + ELLIPSIS


def _to_number(value: Any) -> int | float | Decimal:
    """``value`` as a finite number; numeric strings are accepted, booleans are not."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        number: int | float | Decimal = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            number = int(text)
        except ValueError:
            try:
                number = Decimal(text)
            except InvalidOperation:
                raise ValueError(f"expected a number, got {_show(value)}") from None
    else:
        raise ValueError(f"expected a number, got {_show(value)}")
    if isinstance(number, int):
        return number
    finite = number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)
    if not finite:
        raise ValueError(f"expected a finite number, got {_show(value)}")
    return number


def _to_datetime(value: Any) -> _datetime:
    """``value`` as an aware UTC datetime: a datetime (naive means UTC), a date, ISO 8601 text or epoch seconds."""
    if isinstance(value, _datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return _datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _to_datetime(_to_number(text))
        except ValueError:
            pass
        try:
            return _to_datetime(_datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"expected a date/time (ISO 8601 or epoch seconds), got {_show(value)}") from None
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        seconds = float(value)
        if abs(seconds) > _EPOCH_MS_THRESHOLD:
            seconds /= 1000.0
        try:
            return _datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch time out of range: {_show(value)}") from None
    raise ValueError(f"expected a date/time (datetime, ISO 8601 or epoch seconds), got {_show(value)}")


def _to_int(value: Any, what: str, *, low: int = 0, high: int = 1_000_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, got {_show(value)}")
    return value


def datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    """Format a date/time in UTC with a strftime ``fmt``.

    Accepts a datetime (naive is taken as UTC), a date, an ISO 8601 string
    (``2024-05-01T12:00:00Z``) or epoch seconds (values too large for seconds are read as
    milliseconds). ``{{ event.time | datetime("%d %b %Y") }}``.
    """
    if not isinstance(fmt, str):
        raise ValueError(f"the format must be a string, got {_show(fmt)}")
    return _to_datetime(value).strftime(fmt)


_AGO_UNITS: tuple[tuple[str, float], ...] = (
    ("year", 365 * 86400.0),
    ("month", 30 * 86400.0),
    ("day", 86400.0),
    ("hour", 3600.0),
    ("minute", 60.0),
    ("second", 1.0),
)


def timeago(value: Any, now: Any = None) -> str:
    """How long ago (or ahead) ``value`` is from ``now`` (default: the current time).

    ``"3 minutes ago"``, ``"in 2 hours"``, ``"just now"``; the count is rounded down to the
    largest whole unit (seconds to years). Inputs are read like the ``datetime`` filter's.
    """
    then = _to_datetime(value)
    reference = _datetime.now(UTC) if now is None else _to_datetime(now)
    delta = (reference - then).total_seconds()
    span = abs(delta)
    if span < 1:
        return "just now"
    for unit, size in _AGO_UNITS:
        if span >= size:
            count = int(span // size)
            phrase = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"{phrase} ago" if delta > 0 else f"in {phrase}"
    raise AssertionError("unreachable: span >= 1 second matches a unit")


_DURATION_UNITS: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(seconds: Any) -> str:
    """A humanized duration with its two most significant units: ``"1h 5m"``, ``"45s"``, ``"2d 3h"``.

    Accepts seconds (number or numeric string), a ``timedelta`` or a duration string like
    ``"90s"``; below a second it shows milliseconds (``"250ms"``). Negative values get a ``-``.
    """
    if isinstance(seconds, timedelta):
        total = seconds.total_seconds()
    else:
        try:
            total = float(_to_number(seconds))
        except ValueError:
            if not isinstance(seconds, str):
                raise
            try:
                total = parse_duration(seconds)
            except ValueError:
                raise ValueError(f"expected seconds or a duration like '90s', got {_show(seconds)}") from None
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 1:
        millis = round(total * 1000)
        if millis == 0:
            return "0s"
        if millis < 1000:
            return f"{sign}{millis}ms"
    remaining = round(total)
    values: list[tuple[str, int]] = []
    for unit, size in _DURATION_UNITS:
        values.append((unit, remaining // size))
        remaining %= size
    first = next(i for i, (_, amount) in enumerate(values) if amount or i == len(values) - 1)
    # Two adjacent units at most ("2d 0h 5m" reads as "2d"): a rough size is what a reader wants.
    parts = [f"{amount}{unit}" for unit, amount in values[first : first + 2] if amount]
    return sign + " ".join(parts or ["0s"])


def number(value: Any, decimals: int = 0) -> str:
    """A number with thousands separators and ``decimals`` decimal places: ``12345`` -> ``"12,345"``."""
    amount = _to_number(value)
    places = _to_int(decimals, "decimals", high=20)
    if isinstance(amount, int) and places == 0:
        return f"{amount:,d}"  # exact even beyond float precision
    return f"{amount:,.{places}f}"


_COMPACT_SUFFIXES = ("", "k", "M", "B", "T")


def compact(value: Any) -> str:
    """A short number with one decimal at most: ``1234`` -> ``"1.2k"``, ``3_400_000`` -> ``"3.4M"``.

    Suffixes are k (thousand), M (million), B (billion) and T (trillion).
    """
    amount = float(_to_number(value))
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    index = 0
    while index < len(_COMPACT_SUFFIXES) - 1 and amount >= 1000:
        amount /= 1000
        index += 1
    rounded = round(amount, 1)
    # 999_950 rounds to "1000.0k": carry into the next suffix instead.
    if rounded >= 1000 and index < len(_COMPACT_SUFFIXES) - 1:
        rounded = round(rounded / 1000, 1)
        index += 1
    text = f"{rounded:.1f}".removesuffix(".0")
    if rounded == 0:
        sign = ""
    return f"{sign}{text}{_COMPACT_SUFFIXES[index]}"


def percent(value: Any, decimals: int = 0) -> str:
    """A ratio as a percentage: ``0.256`` -> ``"26%"``, with ``decimals=1`` -> ``"25.6%"``."""
    amount = _to_number(value)
    places = _to_int(decimals, "decimals", high=20)
    return f"{amount * 100:.{places}f}%"


# Characters that attach to the one before them: cutting before one would split what the reader sees as one letter.
_ZWJ = "\u200d"


def _attaches_to_previous(char: str) -> bool:
    code = ord(char)
    return (
        char == _ZWJ
        or unicodedata.category(char) in ("Mn", "Mc", "Me")  # combining marks, keycap
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (text/emoji presentation)
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def truncate_text(text: str, limit: int | None) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when cut.

    The cut never falls inside a character, between a letter and its combining marks, or
    inside an emoji sequence joined by ZWJ. ``None`` means no limit.
    """
    if limit is None or len(text) <= limit:
        return text
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if limit == 0:
        return ""
    cut = limit - len(ELLIPSIS)
    while cut > 0 and (_attaches_to_previous(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    # A flag is a pair of regional indicators: an odd run before the cut means half a flag.
    if _is_regional_indicator(text[cut]):
        run = 0
        while run < cut and _is_regional_indicator(text[cut - 1 - run]):
            run += 1
        cut -= run % 2
    return text[:cut].rstrip() + ELLIPSIS


def truncate_to(text: Any, limit: int) -> str:
    """Shorten text to at most ``limit`` characters, ending with "…" when it was cut."""
    return truncate_text(str(text), _to_int(limit, "limit"))


_DISCORD_SPECIAL = re.compile(r"([\\*_~|>`\[\]])|^([#-])", re.MULTILINE)
_SLACK_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_SLACK_FORMATTING = re.compile(r"[*_~`]")
_ZWSP = "\u200b"


def escape_markdown(text: Any, dialect: str | None = "discord") -> str:
    """Escape user-provided text so a chat app shows it literally instead of formatting it.

    ``"discord"``: backslash before ``\\ * _ ~ | > ` [ ]`` and before ``#`` / ``-`` at the
    start of a line (headings, lists). ``"slack"`` (mrkdwn): ``&``, ``<``, ``>`` become
    ``&amp; &lt; &gt;`` (which also defuses ``<!channel>`` and links) and ``* _ ~ ` `` are
    fenced with zero-width spaces, as mrkdwn has no escape character. ``None``: unchanged,
    for plain-text channels. ``{{ data.user.name | escape_markdown(channel.markdown) }}``.
    """
    value = str(text)
    if dialect is None:
        return value
    if dialect == "discord":
        return _DISCORD_SPECIAL.sub(lambda m: "\\" + m.group(0), value)
    if dialect == "slack":
        value = value.translate(_SLACK_ENTITIES)
        return _SLACK_FORMATTING.sub(lambda m: _ZWSP + m.group(0) + _ZWSP, value)
    raise ValueError(f"unknown markdown dialect {_show(dialect)} (use 'discord', 'slack' or none)")


def _plural_of(word: str) -> str:
    lower = word.lower()
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if lower.endswith("y") and len(word) > 1 and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def pluralize(count: Any, singular: str, plural: str | None = None) -> str:
    """``singular`` when ``count`` is 1 (or -1), else ``plural`` (default: English rules on ``singular``).

    ``count`` may be a number or a collection (its length counts).
    ``{{ count }} {{ count | pluralize("planet") }}`` -> ``"3 planets"``.
    """
    if not isinstance(singular, str) or (plural is not None and not isinstance(plural, str)):
        raise ValueError("the singular and plural forms must be strings")
    amount = len(count) if isinstance(count, Sized) and not isinstance(count, str) else _to_number(count)
    if abs(amount) == 1:
        return singular
    return plural if plural is not None else _plural_of(singular)


# Characters escaped in the quoted scalar rather than written raw: those a YAML stream may not hold
# (PyYAML's reader refuses them), YAML's own line breaks (NEL, LS, PS: a raw one would fold the
# value or end the line) and the byte-order mark.
# Compiled on first use: its Unicode ranges take ~20 ms to compile, at every command's start.
@functools.cache
def _yaml_unprintable() -> re.Pattern[str]:
    return re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def _yaml_escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"  # half a surrogate pair is no character: libyaml refuses it, JSON decoders too
    return f"\\u{code:04x}"


def to_yaml(value: Any) -> str:
    """``value`` as one YAML value on one line, quoted so that nothing in it can change the structure.

    For the YAML of rich message blocks (``{% block discord %}``): strings come out in double
    quotes with ``"``, ``\\``, line breaks and control characters escaped, so a name like
    ``Ann: "the" admin`` or a line break stays a value. Numbers, booleans and null stay what they
    are; lists and mappings become flow collections; anything else is written as its text. Half
    a surrogate pair (which JSON input can carry, but is no character) becomes U+FFFD. Do not put
    quotes around it: ``title: {{ data.name | yaml }}``.
    """
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {_show(value)} as YAML (NaN and infinity have no JSON form)")
        text = repr(value)
        if "e" in text:  # YAML 1.1 reads a float only with a dot and a signed exponent: 1.0e+20
            mantissa, exponent = text.split("e")
            mantissa += "" if "." in mantissa else ".0"
            text = f"{mantissa}e{'' if exponent[0] in '+-' else '+'}{exponent}"
        return text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{to_yaml(str(key))}: {to_yaml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_yaml(item) for item in value) + "]"
    return _yaml_unprintable().sub(_yaml_escape, json.dumps(str(value), ensure_ascii=False))


BUILTIN_FILTERS: dict[str, Callable[..., Any]] = {
    "datetime": datetime,
    "timeago": timeago,
    "duration": duration,
    "number": number,
    "compact": compact,
    "percent": percent,
    "truncate_to": truncate_to,
    "escape_markdown": escape_markdown,
    "pluralize": pluralize,
    "yaml": to_yaml,
}
"""The filters every template gets; plugins add more through ``register_template_filters``."""
