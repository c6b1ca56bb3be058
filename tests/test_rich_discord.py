"""Discord messages from a template's {% block discord %}: YAML, validation, limits, on the wire."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from router.channels.discord import DiscordChannel, DiscordConfig
from router.core.errors import TemplateError
from router.core.message import Message, Outcome
from router.core.records import RetryRecord
from tests.builders import make_event
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply
from tests.rich_support import message, render

URL = "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET-value?thread_id=99"

BASE = """\
{% block title %}{{ data.user.name }} completed {{ data.planet.name }}{% endblock %}
{% block body %}{{ data.user.name }} just completed {{ data.planet.name }}.{% endblock %}
"""

RICH = """\
{% extends "planet.j2" %}
{% block discord %}
embeds:
  - title: {{ self.title() | yaml }}
    url: {{ ("https://example.com/planets/" ~ data.planet.id) | yaml }}
    description: {{ self.body() | yaml }}
    color: "#57F287"
    fields:
      - {name: Learner, value: {{ data.user.name | yaml }}, inline: true}
      - {name: Difficulty, value: {{ data.planet.difficulty }}, inline: true}
    author: {name: {{ data.user.name | yaml }}, icon_url: "https://example.com/u/{{ data.user.id }}.png"}
    thumbnail: "https://example.com/p/{{ data.planet.id }}.png"
    footer: Learning platform
    timestamp: {{ event.time | yaml }}
{% endblock %}
"""

DATA: dict[str, Any] = {"user": {"id": 7, "name": "Ann"}, "planet": {"id": 42, "name": "Mars", "difficulty": 3}}

EXPECTED_EMBED = {
    "title": "Ann completed Mars",
    "url": "https://example.com/planets/42",
    "description": "Ann just completed Mars.",
    "color": 0x57F287,
    "timestamp": "2024-05-01T12:00:00+00:00",
    "fields": [
        {"name": "Learner", "value": "Ann", "inline": True},
        {"name": "Difficulty", "value": "3", "inline": True},
    ],
    "footer": {"text": "Learning platform"},
    "author": {"name": "Ann", "icon_url": "https://example.com/u/7.png"},
    "thumbnail": {"url": "https://example.com/p/42.png"},
}


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(204)) as server:
        with intercept.redirect({"discord.com": server.url}):
            yield server


def rich(tmp_path: Path, block: str, data: dict[str, Any] | None = None, base: str = BASE) -> dict[str, Any] | None:
    """The payload of a planet.discord.j2 holding ``block`` (a whole {% block discord %})."""
    files = {"planet.j2": base, "planet.discord.j2": '{% extends "planet.j2" %}\n' + block}
    return render(tmp_path, files, "planet", DATA if data is None else data, DiscordChannel).payload


def rich_error(tmp_path: Path, block: str, data: dict[str, Any] | None = None) -> str:
    with pytest.raises(TemplateError) as info:
        rich(tmp_path, block, data)
    return str(info.value)


def embeds_block(yaml_text: str) -> str:
    return "{% block discord %}\n" + yaml_text + "\n{% endblock %}\n"


async def send(message: Message, **options: Any) -> tuple[DiscordChannel, Outcome]:
    channel = DiscordChannel("discord-general", DiscordConfig(type="discord", url=URL, **options))
    try:
        return channel, await channel.send(message)
    finally:
        await channel.aclose()


# -- on the wire ----------------------------------------------------------------------------


async def test_rich_message_on_the_wire(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE, "planet.discord.j2": RICH}, "planet", DATA, DiscordChannel)
    assert rendered.title == "Ann completed Mars"  # title and body are still rendered (logs, folds)
    channel, outcome = await send(message(rendered), username="Router Bot", color="#5865F2")
    assert outcome.ok
    [request] = sink.requests
    assert request.path == "/api/webhooks/112233445566/Tok3n_SECRET-value"
    assert request.query.get("thread_id") == "99"  # the channel's thread still applies
    payload = request.json()
    assert payload["username"] == "Router Bot"  # the channel's name, as the block sets none
    assert payload["embeds"] == [EXPECTED_EMBED]  # the template's colour beats the channel's
    assert "content" not in payload
    # `router render` shows exactly this body.
    assert channel.preview(message(rendered)) == [payload]


async def test_channel_colour_and_template_username(sink: HttpSink, tmp_path: Path) -> None:
    payload = rich(tmp_path, embeds_block("username: Planet Bot\nembeds:\n  - title: Hi"))
    _, outcome = await send(Message("t", "b", payload=payload), username="Router Bot", color="#5865F2")
    assert outcome.ok
    sent = sink.requests[0].json()
    assert sent["username"] == "Planet Bot"
    assert sent["embeds"] == [{"title": "Hi", "color": 0x5865F2}]


async def test_content_mentions_never_ping_everyone_by_default(sink: HttpSink, tmp_path: Path) -> None:
    payload = rich(tmp_path, embeds_block("content: {{ data.note | yaml }}"), {**DATA, "note": "hi @everyone"})
    assert (await send(Message("t", "b", payload=payload)))[1].ok
    sent = sink.requests[0].json()
    assert sent["content"] == "hi @everyone"
    assert sent["allowed_mentions"] == {"parse": []}


async def test_plain_template_is_sent_exactly_as_before(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE}, "planet", DATA, DiscordChannel)
    assert rendered.payload is None
    assert (await send(message(rendered)))[1].ok
    [embed] = sink.requests[0].json()["embeds"]
    assert (embed["title"], embed["description"]) == ("Ann completed Mars", "Ann just completed Mars.")


@pytest.mark.parametrize(
    ("replies", "status", "retry_after"),
    [
        ([Reply(400, {"message": "Invalid Form Body"})], "failed", None),
        ([Reply(404, {"message": "Unknown Webhook"})], "failed", None),
        ([Reply(429, {"retry_after": 1.5})] * 2, "retry", 1.5),  # apprise retries a 429 once itself
        ([Reply(503)], "retry", None),
    ],
)
async def test_rich_sends_are_classified_like_plain_ones(
    sink: HttpSink, replies: list[Reply], status: str, retry_after: float | None
) -> None:
    sink.reply(*replies)
    payload = {"embeds": [{"title": "Hi"}]}
    _, outcome = await send(Message("t", "b", payload=payload))
    assert (outcome.status, outcome.retry_after) == (status, retry_after)
    assert all(request.json()["embeds"] == [{"title": "Hi"}] for request in sink.requests)


async def test_payload_survives_a_retry_record(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE, "planet.discord.j2": RICH}, "planet", DATA, DiscordChannel)
    record = RetryRecord("delivery", make_event(DATA), "r", 1, channel="d", message=message(rendered))
    restored = RetryRecord.from_bytes(record.to_bytes())
    assert restored.message == message(rendered)
    assert (await send(restored.message))[1].ok  # type: ignore[arg-type]
    assert sink.requests[0].json()["embeds"] == [EXPECTED_EMBED]


def test_a_record_without_payload_reads_as_a_plain_message() -> None:
    record = RetryRecord("delivery", make_event(DATA), "r", 1, channel="d", message=Message("t", "b"))
    data = record.to_bytes()
    assert b'"payload"' not in data  # records of plain messages are unchanged
    assert RetryRecord.from_bytes(data).message == Message("t", "b")


# -- data that would break YAML -------------------------------------------------------------


HOSTILE = [
    'Ann: "the" admin',
    "line one\nline two\n- not a list",
    "#not a comment",
    "{flow: mapping}",
    "*alias &anchor !tag",
    "tab\there, nul\x00 and \x7f, bom \ufeff",
    "emoji 🪐 and ü",
    "yes",  # YAML 1.1 would read an unquoted yes as true
    "   spaces   ",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_values_from_data_stay_values_with_the_yaml_filter(tmp_path: Path, name: str) -> None:
    block = embeds_block(
        "embeds:\n"
        "  - title: {{ data.user.name | yaml }}\n"
        "    fields:\n"
        "      - {name: Who, value: {{ data.user.name | yaml }}}"
    )
    payload = rich(tmp_path, block, {**DATA, "user": {"id": 1, "name": name}})
    assert payload is not None
    [embed] = payload["embeds"]
    assert embed["title"] == name
    assert embed["fields"] == [{"name": "Who", "value": name}]


def test_without_the_filter_hostile_data_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    block = "\n\n" + embeds_block("embeds:\n  - title: Planet\n    description: {{ data.user.name }}")
    message = rich_error(tmp_path, block, {**DATA, "user": {"id": 1, "name": "Ann: the admin"}})
    assert message.startswith("planet.discord.j2, line 4: block 'discord': rendered line 3")
    assert "description: Ann: the admin" in message
    assert "|yaml" in message


def test_numbers_and_dates_from_data(tmp_path: Path) -> None:
    block = embeds_block(
        "embeds:\n  - fields:\n      - {name: Score, value: {{ data.score | yaml }}}\n    timestamp: {{ data.at }}"
    )
    payload = rich(tmp_path, block, {**DATA, "score": 12.5, "at": 1714564800})
    assert payload is not None
    [embed] = payload["embeds"]
    assert embed["fields"] == [{"name": "Score", "value": "12.5"}]
    assert embed["timestamp"] == "2024-05-01T12:00:00+00:00"


# -- validation errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "embeds:\n  - title: A\n    fields:\n      - {name: a, value: b}\n      - {name: c, value: d}\n"
            '      - {name: e, value: ""}',
            "rendered line 6 ('- {name: e, value: \"\"}'): embeds[0].fields[2].value: must not be empty",
        ),
        ("embeds:\n  - title: A\n    feilds: []", "rendered line 3 ('feilds: []'): embeds[0].feilds: unknown key"),
        ("embeds:\n  - title: A\n    color: blue", 'embeds[0].color: expected a colour like "#57F287"'),
        ("embeds:\n  - title: A\n    color: #57F287", "rendered line 3 ('color: #57F287'): an unquoted # starts"),
        ("embeds:\n  - url: ftp://x", "expected an http(s) URL"),
        ("embeds:\n  - description: ''", "an embed needs a title, description"),
        ("username: Bot", "the message needs content or at least one embed"),
        ("- title: A", "expected a mapping of the message's keys"),
        ("embeds:\n  - title: A\n    timestamp: tomorrow", "embeds[0].timestamp"),
        ("content: hi\nallowed_mentions: {parse: [all]}", "allowed_mentions.parse[0]"),
    ],
)
def test_validation_errors_name_the_key_path(tmp_path: Path, yaml_text: str, expected: str) -> None:
    message = rich_error(tmp_path, embeds_block(yaml_text))
    assert message.startswith("planet.discord.j2, line 2: block 'discord': ")
    assert expected in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        # A few lines standing for millions of values ("billion laughs") are refused before building them.
        ("a: &a [x, x, x, x]\nb: [*a, *a, *a, *a]\ncontent: hi", "rendered line 2 ('b: [*a, *a, *a, *a]'): aliases"),
        ("content: hi\nx: {{ range(30000) | list }}", "more than 20,000 YAML values"),
    ],
)
def test_yaml_that_would_take_long_to_build_is_refused(tmp_path: Path, yaml_text: str, expected: str) -> None:
    started = time.monotonic()
    assert expected in rich_error(tmp_path, embeds_block(yaml_text))
    assert time.monotonic() - started < 5


def test_a_render_error_inside_the_block_names_the_template_line(tmp_path: Path) -> None:
    message = rich_error(tmp_path, embeds_block("embeds:\n  - title: {{ data.user.nickname | yaml }}"))
    assert message.startswith("planet.discord.j2, line 4: ")
    assert "nickname" in message


def test_an_error_in_an_inherited_block_names_the_parent(tmp_path: Path) -> None:
    base = BASE + "{% block discord %}\nembeds:\n  - title: {{ data.user.name }}: done\n{% endblock %}\n"
    files = {"planet.j2": base, "planet.discord.j2": '{% extends "planet.j2" %}'}
    with pytest.raises(TemplateError) as info:
        render(tmp_path, files, "planet", DATA, DiscordChannel)
    assert str(info.value).startswith("planet.j2, line 3: block 'discord': rendered line 2")


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "path", "limit"),
    [
        ("content: {{ 'c' * 2500 }}", ("content",), 2000),
        ("username: {{ 'u' * 100 }}\ncontent: x", ("username",), 80),
        ("embeds:\n  - title: {{ 't' * 300 }}", ("embeds", 0, "title"), 256),
        ("embeds:\n  - description: {{ 'd' * 5000 }}", ("embeds", 0, "description"), 4096),
        ("embeds:\n  - fields: [{name: {{ 'n' * 300 }}, value: v}]", ("embeds", 0, "fields", 0, "name"), 256),
        ("embeds:\n  - fields: [{name: n, value: {{ 'v' * 1500 }}}]", ("embeds", 0, "fields", 0, "value"), 1024),
        ("embeds:\n  - footer: {{ 'f' * 3000 }}", ("embeds", 0, "footer", "text"), 2048),
        ("embeds:\n  - author: {{ 'a' * 300 }}", ("embeds", 0, "author", "name"), 256),
    ],
)
def test_long_text_is_cut_to_discord_limits(tmp_path: Path, yaml_text: str, path: tuple[Any, ...], limit: int) -> None:
    value: Any = rich(tmp_path, embeds_block(yaml_text))
    for key in path:
        value = value[key]
    assert len(value) == limit
    assert value.endswith("…")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "embeds:\n{% for i in range(11) %}  - title: e{{ i }}\n{% endfor %}",
            "embeds: List should have at most 10 items after validation, not 11",
        ),
        (
            "embeds:\n  - fields:\n{% for i in range(26) %}      - {name: n, value: v}\n{% endfor %}",
            "embeds[0].fields: List should have at most 25 items after validation, not 26",
        ),
    ],
)
def test_structure_over_the_limits_is_an_error(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert expected in rich_error(tmp_path, embeds_block(yaml_text))


def test_the_6000_characters_across_embeds_are_met_by_cutting_descriptions(tmp_path: Path) -> None:
    yaml_text = (
        "embeds:\n  - {title: one, description: {{ 'a' * 4000 }}}\n  - {title: two, description: {{ 'b' * 4000 }}}"
    )
    payload = rich(tmp_path, embeds_block(yaml_text))
    assert payload is not None
    first, second = payload["embeds"]
    assert first["description"] == "a" * 4000  # the last embed's description is cut first
    assert second["description"].endswith("…")
    total = sum(len(e["title"]) + len(e["description"]) for e in payload["embeds"])
    assert 5990 < total <= 6000


def test_more_than_6000_characters_in_fields_is_an_error(tmp_path: Path) -> None:
    yaml_text = "embeds:\n  - fields:\n{% for i in range(7) %}      - {name: n, value: {{ 'v' * 1000 }}}\n{% endfor %}"
    message = rich_error(tmp_path, embeds_block(yaml_text))
    assert "the embeds have 7,007 characters of text, 1,007 more than the 6,000 Discord allows" in message


# -- template structure ---------------------------------------------------------------------


def test_an_empty_block_means_a_plain_message(tmp_path: Path) -> None:
    block = embeds_block("{% if data.rich is defined %}embeds:\n  - title: x{% endif %}")
    assert rich(tmp_path, block) is None


def test_a_child_overriding_the_title_changes_the_inherited_rich_message(tmp_path: Path) -> None:
    base = BASE + "{% block discord %}\nembeds:\n  - title: {{ self.title() | yaml }}\n{% endblock %}\n"
    files = {"planet.j2": base, "planet.discord.j2": '{% extends "planet.j2" %}{% block title %}New!{% endblock %}'}
    rendered = render(tmp_path, files, "planet", DATA, DiscordChannel)
    assert rendered.payload == {"embeds": [{"title": "New!"}]}
    assert rendered.title == "New!"


def test_a_child_can_extend_the_parent_block_with_super(tmp_path: Path) -> None:
    base = BASE + "{% block discord %}\nembeds:\n  - title: Parent\n{% endblock %}\n"
    child = '{% extends "planet.j2" %}{% block discord %}{{ super() }}  - title: Child\n{% endblock %}'
    rendered = render(tmp_path, {"planet.j2": base, "planet.discord.j2": child}, "planet", DATA, DiscordChannel)
    assert rendered.payload == {"embeds": [{"title": "Parent"}, {"title": "Child"}]}


def test_a_block_only_template_has_no_yaml_in_its_body(tmp_path: Path) -> None:
    source = "{% set who = data.user.name %}{% block discord %}\nembeds:\n  - title: {{ who | yaml }}\n{% endblock %}"
    rendered = render(tmp_path, {"solo.j2": source}, "solo", DATA, DiscordChannel)
    assert rendered.payload == {"embeds": [{"title": "Ann"}]}
    assert rendered.body == "" and rendered.title == ""


def test_other_channel_types_ignore_the_block(tmp_path: Path) -> None:
    from router.channels.console import ConsoleChannel

    source = "{% block discord %}\nembeds:\n  - title: {{ data.nope }}\n{% endblock %}Plain {{ data.user.name }}"
    rendered = render(tmp_path, {"solo.j2": source}, "solo", DATA, ConsoleChannel)
    assert rendered.payload is None
    assert rendered.body == "Plain Ann"  # not rendered at all: its undefined variable does not matter


def test_yaml_filter_on_values_that_json_cannot_write(tmp_path: Path) -> None:
    message = rich_error(tmp_path, embeds_block("content: {{ data.x | yaml }}"), {**DATA, "x": float("nan")})
    assert "filter 'yaml'" in message
