"""docs/templates.md's promises for template authors (issue 16, part C), checked against the code."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from router.channels.console import ConsoleChannel
from router.channels.discord import DiscordChannel, DiscordConfig
from router.channels.email import EmailChannel
from router.channels.slack import SlackChannel, SlackConfig
from router.channels.webhook import WebhookChannel
from router.cli import cli
from router.templating.filters import escape_markdown
from tests.engine_support import until
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "templates.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n#", start + len(title))
    return DOC[start : end if end != -1 else None]


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# -- C1: escape_markdown's dialects -----------------------------------------------------------


def test_escape_markdown_table_matches_the_filter() -> None:
    table = section("### `escape_markdown`")
    sample = "*Ann* <!channel> & a_b"
    assert f"`{sample}` becomes" in table
    rows = {
        '`"discord"`': escape_markdown(sample),
        '`"slack"`': escape_markdown(sample, "slack"),
        "`none`": escape_markdown(sample, None),
    }
    assert escape_markdown(sample) == escape_markdown(sample, "discord")  # the default
    for start, expected in rows.items():
        [row] = [line for line in table.splitlines() if line.startswith(f"| {start}")]
        shown = code_spans(row.split(" | ")[-1])[0].replace("\\u200b", "\u200b")
        assert shown == expected, (start, shown, expected)


def test_unknown_dialect_error_is_the_documented_one() -> None:
    with pytest.raises(ValueError) as caught:
        escape_markdown("x", "x")
    assert f"`{caught.value}`" in " ".join(section("### `escape_markdown`").split())


def test_channel_markdown_is_what_the_doc_says() -> None:
    assert (DiscordChannel.markdown, SlackChannel.markdown) == ("discord", "slack")
    assert ConsoleChannel.markdown is EmailChannel.markdown is WebhookChannel.markdown is None


# -- C2, C5: times, the discord block in NAME.j2, `inline` ---------------------------------------

RULES = """\
version: 1
channels:
  chat: {type: discord, url: "https://discord.com/api/webhooks/1/abc"}
  console: {type: console}
rules:
  - {name: r, on: x.y, template: t, channels: [chat, console]}
"""

TEMPLATE = """\
{% block title %}{{ event.time }}|{{ event.time | yaml }}|{{ event.time | datetime }}{% endblock %}
{% block body %}{{ data.sentAt }}|{{ data.sentAt | datetime }}{% endblock %}
{% block discord %}
embeds:
  - title: t
    timestamp: {{ data.sentAt | yaml }}
    fields:
      - {name: a, value: b}
      - {name: c, value: d, inline: true}
  - {title: u, timestamp: {{ event.time | yaml }}}
  - {title: v, timestamp: 1714564800}
{% endblock %}
"""


def render(tmp_path: Path, event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "t.j2").write_text(TEMPLATE)
    (tmp_path / "e.json").write_text(json.dumps(event))
    result = CliRunner().invoke(
        cli,
        ["render", "--rule", "r", "--event", str(tmp_path / "e.json"), "--json", "-c", str(tmp_path / "rules.yaml")],
    )
    assert result.exit_code == 0, result.output
    return {item["channel"]: item for item in json.loads(result.output)}


def test_times_print_as_documented(tmp_path: Path) -> None:
    times = section("### Times")
    for sent in ("2024-05-01T12:00:00.000Z", "2024-05-01T14:00:00.000+02:00"):
        assert f'"{sent}"' in times
        out = render(tmp_path, {"type": "x.y", "time": sent, "data": {"sentAt": "2024-05-01T12:00:00.000Z"}})
        title, body = out["console"]["title"], out["console"]["body"]
        assert title == '2024-05-01 12:00:00+00:00|"2024-05-01 12:00:00+00:00"|2024-05-01 12:00 UTC'
        assert body == "2024-05-01T12:00:00.000Z|2024-05-01 12:00 UTC"
        embeds = out["chat"]["payload"]["embeds"]
        assert [e["timestamp"] for e in embeds] == ["2024-05-01T12:00:00+00:00"] * 3
    for shown in ("`2024-05-01 12:00:00+00:00`", "`2024-05-01 12:00 UTC`", "`2024-05-01T12:00:00.000Z`"):
        assert shown in times
    assert "`2024-05-01T12:00:00+00:00`" in times
    out = render(
        tmp_path, {"type": "x.y", "time": "2024-05-01T12:00:00.123Z", "data": {"sentAt": "2024-05-01T12:00:00Z"}}
    )
    assert out["console"]["title"].startswith("2024-05-01 12:00:00.123000+00:00|")
    assert "`12:00:00.123000+00:00`" in times


def test_discord_block_in_name_j2_and_inline_left_out(tmp_path: Path) -> None:
    assert "The block may live in `NAME.j2` itself" in DOC
    out = render(tmp_path, {"type": "x.y", "data": {"sentAt": "2024-05-01T12:00:00Z"}})
    assert out["chat"]["rich"] is True  # read from t.j2: there is no t.discord.j2
    assert "payload" not in out["console"]  # other channel types ignore the block
    fields = out["chat"]["payload"]["embeds"][0]["fields"]
    assert fields == [{"name": "a", "value": "b"}, {"name": "c", "value": "d", "inline": True}]
    assert "A field without `inline` is posted\nwithout the key" in DOC


# -- C3: URL forms, and a local test server ------------------------------------------------------

PLACEHOLDERS = [
    ("T.../B.../XXXX", "T0AB/B0CD/XyZ123"),
    ("xoxb-TOKEN", "xoxb-123-abc"),
    ("ID/TOKEN", "123456/tok_EN-1"),
    ("v10", "v10"),
    ("NAME@", "Bot@"),
    ("?OPTIONS", "?tts=yes"),
    ("?thread_id=ID", "?thread_id=99"),
]


def documented_urls(channel: str) -> list[str]:
    table = section("## Chat channel URLs")
    [row] = [line for line in table.splitlines() if line.startswith(f"| `{channel}` |")]
    urls = [s for s in code_spans(row) if "://" in s]
    if channel == "discord":
        urls.append("https://discord.com/api/webhooks/ID/TOKEN?thread_id=ID")
        urls += [
            f"https://{host}/api/webhooks/ID/TOKEN"
            for host in ("discordapp.com", "ptb.discord.com", "canary.discord.com")
        ]
        urls.append("https://discord.com/api/v10/webhooks/ID/TOKEN")
    if channel == "slack":
        urls.append("https://hooks.slack-gov.com/services/T.../B.../XXXX")
    out = []
    for url in urls:
        for placeholder, value in PLACEHOLDERS:
            url = url.replace(placeholder, value)
        out.append(url)
    return out


def test_every_documented_discord_url_form_is_accepted() -> None:
    urls = documented_urls("discord")
    assert len(urls) >= 7
    for url in urls:
        DiscordConfig(type="discord", url=url)


def test_every_documented_slack_url_form_is_accepted() -> None:
    urls = documented_urls("slack")
    assert len(urls) >= 5
    for url in urls:
        SlackConfig(type="slack", url=url)


@pytest.mark.integration
async def test_the_documented_local_server_recipe_receives_the_real_request(tmp_path: Path) -> None:
    recipe = section("## Chat channel URLs")
    assert "PYTHONPATH=tests/fakes/autoload" in recipe and 'ROUTER_TEST_REDIRECT="discord.com=http' in recipe
    async with HttpSink(Reply(204)) as sink:
        (tmp_path / "rules.yaml").write_text(RULES.replace("chat, console", "chat"))
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "t.j2").write_text(
            "{% block title %}hello{% endblock %}{% block body %}b{% endblock %}"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests/fakes/autoload"), env.get("PYTHONPATH")]))
        env["ROUTER_TEST_REDIRECT"] = f"discord.com={sink.url},hooks.slack.com={sink.url}"
        env.pop("ROUTER_CONFIG", None)
        router = await RouterProcess(tmp_path, env=env, args=("--no-watch",)).start()
        try:
            import aiohttp

            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{router.url}/events", json={"type": "x.y", "data": {}}) as response,
            ):
                assert response.status == 202
            await until(lambda: len(sink.requests) >= 1, timeout=30)
        finally:
            await router.stop()
    [request] = sink.requests
    assert request.path == "/api/webhooks/1/abc"
    assert request.original_host == "discord.com"
    assert request.json()["embeds"][0]["title"] == "hello"


def test_the_router_itself_has_no_redirect_hook() -> None:
    """The doc says only tests/fakes/autoload reads ROUTER_TEST_REDIRECT: an installed router ignores it."""
    for path in (ROOT / "router").rglob("*.py"):
        assert "ROUTER_TEST_REDIRECT" not in path.read_text(encoding="utf-8"), path
