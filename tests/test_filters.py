"""The built-in template filters, called directly as Python functions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from router.templating import filters
from router.templating.filters import BUILTIN_FILTERS, truncate_text

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_builtin_filters_are_documented_and_named_as_registered() -> None:
    expected = {"datetime", "timeago", "duration", "number", "compact", "percent", "truncate_to"}
    expected |= {"escape_markdown", "pluralize", "yaml"}
    assert set(BUILTIN_FILTERS) == expected
    for name, function in BUILTIN_FILTERS.items():
        assert function.__doc__, name


# -- datetime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        NOW,
        NOW.replace(tzinfo=None),  # naive is UTC
        NOW.astimezone(timezone(timedelta(hours=2))),  # converted to UTC
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00+02:00",
        NOW.timestamp(),
        int(NOW.timestamp()),
        str(int(NOW.timestamp())),
        int(NOW.timestamp() * 1000),  # JavaScript milliseconds
    ],
)
def test_datetime_reads_every_common_form(value: object) -> None:
    assert filters.datetime(value) == "2024-05-01 12:00 UTC"


def test_datetime_custom_format_and_date() -> None:
    assert filters.datetime(NOW, "%d %b %Y") == "01 May 2024"
    assert filters.datetime(date(2024, 5, 1), "%Y-%m-%d %H:%M") == "2024-05-01 00:00"


@pytest.mark.parametrize("value", ["yesterday", None, True, [], 1e30])
def test_datetime_rejects_bad_input_with_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match=r"date/time|out of range"):
        filters.datetime(value)


def test_datetime_rejects_a_non_string_format() -> None:
    with pytest.raises(ValueError, match="format"):
        filters.datetime(NOW, 5)  # type: ignore[arg-type]


# -- timeago --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("then", "expected"),
    [
        (NOW - timedelta(minutes=3), "3 minutes ago"),
        (NOW - timedelta(minutes=1, seconds=59), "1 minute ago"),
        (NOW - timedelta(seconds=30), "30 seconds ago"),
        (NOW + timedelta(hours=2, minutes=10), "in 2 hours"),
        (NOW - timedelta(days=1), "1 day ago"),
        (NOW - timedelta(days=45), "1 month ago"),
        (NOW - timedelta(days=800), "2 years ago"),
        (NOW - timedelta(milliseconds=200), "just now"),
    ],
)
def test_timeago(then: datetime, expected: str) -> None:
    assert filters.timeago(then, now=NOW) == expected


def test_timeago_defaults_to_the_current_time() -> None:
    recent = datetime.now(UTC) - timedelta(hours=3, minutes=1)
    assert filters.timeago(recent.isoformat()) == "3 hours ago"


def test_timeago_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="date/time"):
        filters.timeago("soon", now=NOW)


# -- duration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (3900, "1h 5m"),
        (45, "45s"),
        (2 * 86400 + 3 * 3600 + 59, "2d 3h"),
        (2 * 86400 + 5 * 60, "2d"),  # two adjacent units at most
        (3600, "1h"),
        (0, "0s"),
        (0.25, "250ms"),
        (59.6, "1m"),
        (-90, "-1m 30s"),
        ("90", "1m 30s"),
        ("5m", "5m"),
        (timedelta(hours=1, minutes=5), "1h 5m"),
        (Decimal("61"), "1m 1s"),
    ],
)
def test_duration(seconds: object, expected: str) -> None:
    assert filters.duration(seconds) == expected


@pytest.mark.parametrize("value", ["a while", None, True])
def test_duration_rejects_bad_input(value: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        filters.duration(value)


# -- number, compact, percent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (12345, 0, "12,345"),
        (1234567.891, 2, "1,234,567.89"),
        ("12345.5", 1, "12,345.5"),
        (-9876, 0, "-9,876"),
        (2**70, 0, "1,180,591,620,717,411,303,424"),  # exact, not via float
        (Decimal("1000.005"), 3, "1,000.005"),
    ],
)
def test_number(value: object, decimals: int, expected: str) -> None:
    assert filters.number(value, decimals) == expected


@pytest.mark.parametrize("value", ["abc", None, True, float("nan"), "inf", [1]])
def test_number_rejects_non_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="number"):
        filters.number(value)


@pytest.mark.parametrize("decimals", [-1, 21, 1.5, "2"])
def test_number_rejects_bad_decimals(decimals: object) -> None:
    with pytest.raises(ValueError, match="decimals"):
        filters.number(1, decimals)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (950, "950"),
        (1000, "1k"),
        (1234, "1.2k"),
        (3_400_000, "3.4M"),
        (999_950, "1M"),  # rounding carries into the next suffix
        (2_500_000_000, "2.5B"),
        (7.2e12, "7.2T"),
        (-1500, "-1.5k"),
        (12.34, "12.3"),
        ("1500", "1.5k"),
        (-0.01, "0"),
    ],
)
def test_compact(value: object, expected: str) -> None:
    assert filters.compact(value) == expected


def test_compact_rejects_non_numbers() -> None:
    with pytest.raises(ValueError, match="number"):
        filters.compact("lots")


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [(0.256, 0, "26%"), (0.256, 1, "25.6%"), (1, 0, "100%"), ("0.5", 0, "50%"), (0, 2, "0.00%")],
)
def test_percent_reads_a_ratio(value: object, decimals: int, expected: str) -> None:
    assert filters.percent(value, decimals) == expected


def test_percent_rejects_non_numbers() -> None:
    with pytest.raises(ValueError, match="number"):
        filters.percent("half")


# -- truncation -----------------------------------------------------------------------------


def test_truncate_to_keeps_short_text_and_cuts_long_text_with_an_ellipsis() -> None:
    assert filters.truncate_to("short", 10) == "short"
    assert filters.truncate_to("exactly 10", 10) == "exactly 10"
    cut = filters.truncate_to("a rather long sentence", 10)
    assert cut == "a rather…"
    assert len(cut) <= 10
    assert filters.truncate_to(12345678, 5) == "1234…"
    assert filters.truncate_to("anything", 0) == ""


def test_truncate_to_rejects_a_bad_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        filters.truncate_to("text", -1)
    with pytest.raises(ValueError, match="limit"):
        filters.truncate_to("text", "5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("héllo wörld", 6, "héllo…"),
        ("日本語のテキストです", 5, "日本語の…"),
        ("ab👩‍💻cd", 4, "ab…"),  # woman technologist is one ZWJ sequence: not split
        ("abe\u0301\u0301x", 4, "ab…"),  # e + two combining accents stay together
        ("a🇫🇷🇩🇪", 3, "a…"),  # a flag is two regional indicators
        ("a🇫🇷🇩🇪", 4, "a🇫🇷…"),
        ("ok👍🏽!", 4, "ok…"),  # skin-tone modifier stays with its emoji
    ],
)
def test_truncation_never_splits_a_visible_character(text: str, limit: int, expected: str) -> None:
    result = truncate_text(text, limit)
    assert result == expected
    assert len(result) <= limit
    result.encode("utf-8")  # well-formed: no half characters


def test_truncate_text_without_limit_is_identity() -> None:
    assert truncate_text("x" * 10_000, None) == "x" * 10_000


# -- escape_markdown ------------------------------------------------------------------------


def test_escape_markdown_discord_escapes_every_formatting_character() -> None:
    assert filters.escape_markdown("*bold* _it_ ~~s~~ ||spoiler|| `code` \\ > q") == (
        "\\*bold\\* \\_it\\_ \\~\\~s\\~\\~ \\|\\|spoiler\\|\\| \\`code\\` \\\\ \\> q"
    )
    assert filters.escape_markdown("[click](https://evil.example)") == "\\[click\\](https://evil.example)"
    assert filters.escape_markdown("# big\n- item\nplain # and - stay") == "\\# big\n\\- item\nplain # and - stay"


def test_escape_markdown_slack_uses_entities_and_fences_formatting() -> None:
    zw = "\u200b"
    assert filters.escape_markdown("a & b <!channel> > c", "slack") == "a &amp; b &lt;!channel&gt; &gt; c"
    assert filters.escape_markdown("*x*", "slack") == f"{zw}*{zw}x{zw}*{zw}"
    assert filters.escape_markdown("_~`", "slack") == f"{zw}_{zw}{zw}~{zw}{zw}`{zw}"


def test_escape_markdown_none_dialect_is_plain_text_and_unknown_is_an_error() -> None:
    assert filters.escape_markdown("*as is*", None) == "*as is*"
    assert filters.escape_markdown(42) == "42"
    with pytest.raises(ValueError, match="dialect"):
        filters.escape_markdown("x", "teams")


# -- pluralize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, "planet"),
        (0, "planets"),
        (2, "planets"),
        (-1, "planet"),
        ("1", "planet"),
        ([1, 2], "planets"),
        ([1], "planet"),
    ],
)
def test_pluralize(count: object, expected: str) -> None:
    assert filters.pluralize(count, "planet") == expected


def test_pluralize_english_defaults_and_explicit_plural() -> None:
    assert filters.pluralize(2, "box") == "boxes"
    assert filters.pluralize(2, "match") == "matches"
    assert filters.pluralize(2, "entry") == "entries"
    assert filters.pluralize(2, "day") == "days"
    assert filters.pluralize(3, "person", "people") == "people"
    assert filters.pluralize(1, "person", "people") == "person"


def test_pluralize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="number"):
        filters.pluralize("many", "planet")
    with pytest.raises(ValueError, match="strings"):
        filters.pluralize(2, 5)  # type: ignore[arg-type]
