"""Slack messages from a template's {% block slack %}: Block Kit in YAML, validation, limits, on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from router.channels.slack import SlackChannel, SlackConfig
from router.core.errors import TemplateError
from router.core.message import Message, Outcome
from router.core.records import RetryRecord
from tests.builders import make_event
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply
from tests.rich_support import message, render

URL = "https://hooks.slack.com/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc"

BASE = """\
{% block title %}{{ data.user.name }} completed {{ data.planet.name }}{% endblock %}
{% block body %}{{ data.user.name }} just completed {{ data.planet.name }}.{% endblock %}
"""

RICH = """\
{% extends "planet.j2" %}
{% block slack %}
blocks:
  - type: header
    text: {{ self.title() | yaml }}
  - type: section
    text: {{ ("*" ~ data.user.name | escape_markdown("slack") ~ "* finished *" ~ data.planet.name ~ "*") | yaml }}
    accessory:
      type: image
      image_url: "https://example.com/p/{{ data.planet.id }}.png"
      alt_text: {{ data.planet.name | yaml }}
  - type: section
    fields:
      - {{ ("*Difficulty*\\n" ~ data.planet.difficulty) | yaml }}
      - {type: plain_text, text: {{ data.user.name | yaml }}}
  - type: divider
  - type: context
    elements:
      - "Learning platform"
      - {type: image, image_url: "https://example.com/logo.png", alt_text: logo}
  - type: actions
    elements:
      - type: button
        text: {type: plain_text, text: Open}
        url: "https://example.com/planets/{{ data.planet.id }}"
        action_id: open
{% endblock %}
"""

DATA: dict[str, Any] = {"user": {"id": 7, "name": "Ann"}, "planet": {"id": 42, "name": "Mars", "difficulty": 3}}

EXPECTED_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Ann completed Mars"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*Ann* finished *Mars*"},
        "accessory": {"type": "image", "image_url": "https://example.com/p/42.png", "alt_text": "Mars"},
    },
    {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": "*Difficulty*\n3"}, {"type": "plain_text", "text": "Ann"}],
    },
    {"type": "divider"},
    {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "Learning platform"},
            {"type": "image", "image_url": "https://example.com/logo.png", "alt_text": "logo"},
        ],
    },
    {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open"},
                "url": "https://example.com/planets/42",
                "action_id": "open",
            }
        ],
    },
]


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, "ok")) as server:
        with intercept.redirect({"hooks.slack.com": server.url}):
            yield server


def rich(tmp_path: Path, yaml_text: str, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    block = '{% extends "planet.j2" %}\n{% block slack %}\n' + yaml_text + "\n{% endblock %}\n"
    files = {"planet.j2": BASE, "planet.slack.j2": block}
    return render(tmp_path, files, "planet", DATA if data is None else data, SlackChannel).payload


def rich_error(tmp_path: Path, yaml_text: str) -> str:
    with pytest.raises(TemplateError) as info:
        rich(tmp_path, yaml_text)
    text = str(info.value)
    assert text.startswith("planet.slack.j2, line 2: block 'slack': ")
    return text


async def send(message: Message, **options: Any) -> tuple[SlackChannel, Outcome]:
    # A new channel per send: apprise spaces sends of one Slack channel 1.2s apart.
    channel = SlackChannel("slack-ops", SlackConfig(type="slack", url=URL, **options))
    try:
        return channel, await channel.send(message)
    finally:
        await channel.aclose()


# -- on the wire ----------------------------------------------------------------------------


async def test_block_kit_message_on_the_wire(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE, "planet.slack.j2": RICH}, "planet", DATA, SlackChannel)
    channel, outcome = await send(message(rendered), username="Router", channel="#ops")
    assert outcome.ok
    [request] = sink.requests
    assert request.path == "/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc"
    payload = request.json()
    assert payload == {
        "channel": "#ops",  # where and who from the channel's options
        "username": "Router",
        "text": "Ann completed Mars",  # the notification text: the rendered title, as the block gave none
        "blocks": EXPECTED_BLOCKS,
    }
    assert channel.preview(message(rendered)) == [payload]


async def test_the_block_can_set_text_and_sender(sink: HttpSink, tmp_path: Path) -> None:
    payload = rich(tmp_path, "text: Fallback\nusername: Planet Bot\nicon_emoji: ':ringed_planet:'\nblocks: ['*hi*']")
    assert (await send(Message("t", "b", payload=payload), username="Router"))[1].ok
    assert sink.requests[0].json() == {
        "username": "Planet Bot",
        "text": "Fallback",
        "icon_emoji": ":ringed_planet:",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}],
    }


async def test_plain_template_is_sent_exactly_as_before(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE}, "planet", DATA, SlackChannel)
    assert rendered.payload is None
    assert (await send(message(rendered)))[1].ok
    header, section = sink.requests[0].json()["attachments"][0]["blocks"]
    assert header["text"]["text"] == "Ann completed Mars"
    assert section["text"]["text"] == "Ann just completed Mars."


@pytest.mark.parametrize(
    ("reply", "status"),
    [(Reply(400, "invalid_blocks"), "failed"), (Reply(404, "no_service"), "failed"), (Reply(500), "retry")],
)
async def test_rich_sends_are_classified_like_plain_ones(sink: HttpSink, reply: Reply, status: str) -> None:
    sink.reply(reply)
    _, outcome = await send(Message("t", "b", payload={"blocks": [{"type": "divider"}]}))
    assert outcome.status == status


async def test_payload_survives_a_retry_record(sink: HttpSink, tmp_path: Path) -> None:
    rendered = render(tmp_path, {"planet.j2": BASE, "planet.slack.j2": RICH}, "planet", DATA, SlackChannel)
    record = RetryRecord("delivery", make_event(DATA), "r", 2, channel="s", message=message(rendered))
    restored = RetryRecord.from_bytes(record.to_bytes())
    assert restored.message is not None and restored.message.payload == rendered.payload
    assert (await send(restored.message))[1].ok
    assert sink.requests[0].json()["blocks"] == EXPECTED_BLOCKS


# -- data that would break YAML -------------------------------------------------------------


@pytest.mark.parametrize("name", ['Ann: "x"', "a\nb: c", "- [x]", "#x", "&a *b", "null", "🪐"])
def test_values_from_data_stay_values(tmp_path: Path, name: str) -> None:
    payload = rich(
        tmp_path, "blocks:\n  - {type: header, text: {{ data.user.name | yaml }}}", {**DATA, "user": {"name": name}}
    )
    assert payload == {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": name}}]}


# -- validation and limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("blocks:\n  - type: header\n    text: {type: mrkdwn, text: x}", "blocks[0].text: must be a plain_text"),
        ("blocks:\n  - type: section", "blocks[0]: a section needs text or fields"),
        (
            "blocks:\n  - type: image\n    image_url: nope\n    alt_text: x",
            "blocks[0].image_url: expected an http(s) URL",
        ),
        ("blocks:\n  - type: image\n    image_url: 'https://x.example/i.png'", "blocks[0].alt_text: Field required"),
        ("blocks:\n  - {type: context, elements: []}", "blocks[0].elements: List should have at least 1 item"),
        ("blocks:\n  - {type: actions, elements: [{text: x}]}", "blocks[0].elements[0].type: Field required"),
        ("blocks:\n  - {text: x}", "blocks[0].type: Field required"),
        ("blokcs: []", "rendered line 1 ('blokcs: []'): blokcs: unknown key"),
        ("username: bot", "the message needs text, blocks or attachments"),
        ("text: hi\nattachments: [{color: purple}]", 'attachments[0].color: expected a colour like "#36A64F"'),
    ],
)
def test_validation_errors_name_the_key_path(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert expected in rich_error(tmp_path, yaml_text)


def test_validation_error_points_at_the_rendered_line(tmp_path: Path) -> None:
    text = rich_error(tmp_path, "text: hi\nblocks:\n  - type: divider\n  - type: header\n    text: ''")
    assert "rendered line 5 (\"text: ''\"): blocks[1].text.text: must not be empty" in text


@pytest.mark.parametrize(
    ("yaml_text", "path", "limit"),
    [
        ("blocks:\n  - {type: header, text: {{ 'h' * 200 }}}", ("blocks", 0, "text", "text"), 150),
        ("blocks:\n  - {type: section, text: {{ 's' * 3500 }}}", ("blocks", 0, "text", "text"), 3000),
        ("blocks:\n  - {type: section, fields: [{{ 'f' * 2500 }}]}", ("blocks", 0, "fields", 0, "text"), 2000),
        ("blocks:\n  - {type: context, elements: [{{ 'c' * 3500 }}]}", ("blocks", 0, "elements", 0, "text"), 3000),
        ("text: {{ 't' * 41000 }}", ("text",), 40_000),
        (
            "blocks:\n  - {type: image, image_url: 'https://x.example/i.png', alt_text: {{ 'a' * 2500 }}}",
            ("blocks", 0, "alt_text"),
            2000,
        ),
    ],
)
def test_long_text_is_cut_to_slack_limits(tmp_path: Path, yaml_text: str, path: tuple[Any, ...], limit: int) -> None:
    value: Any = rich(tmp_path, yaml_text)
    for key in path:
        value = value[key]
    assert len(value) == limit
    assert value.endswith("…")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("blocks:\n{% for i in range(51) %}  - {type: divider}\n{% endfor %}", "blocks: List should have at most 50"),
        ("blocks:\n  - type: section\n    fields: {{ ['f'] * 11 }}", "blocks[0].fields: List should have at most 10"),
        (
            "blocks:\n  - type: context\n    elements: {{ ['e'] * 11 }}",
            "blocks[0].elements: List should have at most 10",
        ),
        (
            "blocks:\n  - type: actions\n    elements: {{ [{'type': 'button'}] * 26 }}",
            "blocks[0].elements: List should have at most 25",
        ),
    ],
)
def test_structure_over_the_limits_is_an_error(tmp_path: Path, yaml_text: str, expected: str) -> None:
    assert expected in rich_error(tmp_path, yaml_text)


def test_fifty_blocks_are_fine(tmp_path: Path) -> None:
    payload = rich(tmp_path, "blocks:\n{% for i in range(50) %}  - {type: divider}\n{% endfor %}")
    assert payload is not None and len(payload["blocks"]) == 50


def test_unknown_block_types_and_extra_keys_pass_through(tmp_path: Path) -> None:
    yaml_text = (
        "blocks:\n"
        "  - {type: rich_text, elements: [{type: rich_text_section, elements: [{type: text, text: hi}]}]}\n"
        "  - {type: section, text: hi, expand: true, block_id: b1}\n"
        "attachments:\n"
        "  - color: '#36a64f'\n"
        "    blocks: [{type: divider}]"
    )
    assert rich(tmp_path, yaml_text) == {
        "blocks": [
            {
                "type": "rich_text",
                "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": "hi"}]}],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}, "expand": True, "block_id": "b1"},
        ],
        "attachments": [{"color": "#36A64F", "blocks": [{"type": "divider"}]}],
    }
