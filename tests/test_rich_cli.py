"""`router render` shows the exact JSON a channel would post, for rich and for plain messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from router.cli import cli
from tests.builders import event_object

RULES = """\
version: 1
templates: templates
channels:
  console: {type: console}
  discord-general:
    type: discord
    url: "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET"
    username: Mission Control
  slack-growth:
    type: slack
    url: "https://hooks.slack.com/services/T0001/B0002/SeCrEtXXXX"
    channel: "#growth"
rules:
  - name: planet-completed
    on: planet.completed
    template: planet
    channels: [console, discord-general, slack-growth]
"""

BASE = """\
{% block title %}{{ data.user }} completed {{ data.planet }}{% endblock %}
{% block body %}Well done, {{ data.user }}.{% endblock %}
"""

DISCORD = """\
{% extends "planet.j2" %}
{% block discord %}
embeds:
  - title: {{ self.title() | yaml }}
    color: "#57F287"
    fields: [{name: Learner, value: {{ data.user | yaml }}, inline: true}]
{% endblock %}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "planet.j2").write_text(BASE)
    (tmp_path / "templates" / "planet.discord.j2").write_text(DISCORD)
    (tmp_path / "event.json").write_text(
        json.dumps(event_object("planet.completed", None, {"user": 'Ann "A": B', "planet": "Mars"}))
    )
    return tmp_path


def render(project: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        [
            "render",
            "--rule",
            "planet-completed",
            "--event",
            str(project / "event.json"),
            *args,
            "-c",
            str(project / "rules.yaml"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "Tok3n_SECRET" not in result.output and "SeCrEt" not in result.output
    return result.output


def test_render_json_shows_the_rich_payload_as_posted(project: Path) -> None:
    console, discord, slack = json.loads(render(project, "--json"))
    assert discord["channel"] == "discord-general" and discord["rich"] is True
    assert discord["payload"] == {
        "tts": False,
        "wait": True,
        "username": "Mission Control",
        "embeds": [
            {
                "title": 'Ann "A": B completed Mars',
                "color": 0x57F287,
                "fields": [{"name": "Learner", "value": 'Ann "A": B', "inline": True}],
            }
        ],
        "allowed_mentions": {"parse": []},  # every post: the channel's mentions option (nobody)
    }
    # A plain message: the body apprise builds from title and body.
    assert slack["rich"] is False
    assert slack["payload"]["channel"] == "#growth"
    header, section = slack["payload"]["attachments"][0]["blocks"]
    assert header["text"]["text"] == 'Ann "A": B completed Mars'
    assert section["text"]["text"] == 'Well done, Ann "A": B.'
    # A channel that posts no JSON body: as before.
    assert console == {"channel": "console", "title": 'Ann "A": B completed Mars', "body": 'Well done, Ann "A": B.'}


def test_render_one_channel_as_text_prints_the_payload(project: Path) -> None:
    output = render(project, "--channel", "discord-general")
    assert output.startswith('── discord-general (discord) ──\nTitle: Ann "A": B completed Mars\nWell done')
    assert "Payload ({% block discord %}):" in output
    payload = json.loads(output.split("Payload ({% block discord %}):", 1)[1])
    assert payload["embeds"][0]["fields"][0]["value"] == 'Ann "A": B'


def test_render_reports_a_broken_rich_block_with_file_and_line(project: Path) -> None:
    (project / "templates" / "planet.discord.j2").write_text(
        '{% extends "planet.j2" %}\n{% block discord %}\nembeds:\n  - title: {{ data.user }}\n{% endblock %}\n'
    )
    result = CliRunner().invoke(
        cli,
        [
            "render",
            "--rule",
            "planet-completed",
            "--event",
            str(project / "event.json"),
            "-c",
            str(project / "rules.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert "planet.discord.j2, line 2: block 'discord': rendered line 2" in result.output
