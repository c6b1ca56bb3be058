"""examples/learning-platform: the notification jobs of a learning platform as rules.yaml and templates.

The example must check clean, route and render each of the platform's events to the exact
Discord message, email one reply per idempotency key to the learner, dead-letter an event that
fails its schema and tell the operations channel about it, and post nothing in dry run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from router import Publisher
from router.cli import cli
from tests.builders import event_object
from tests.conftest import ROOT
from tests.engine_support import until
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Recorded, Reply
from tests.fakes.smtp_sink import Received, SmtpSink
from tests.serve_support import ROUTER, RouterProcess, delete_topology, scrape_metrics, unique_names

EXAMPLE = ROOT / "examples" / "learning-platform"
EVENTS = EXAMPLE / "events"

# The variables the example reads; the tests set them (or clear them, for the defaults).
EXAMPLE_ENV = (
    "ROUTER_BROKER_URL",
    "ROUTER_EXCHANGE",
    "ROUTER_QUEUE",
    "ROUTER_STATE_URL",
    "ROUTER_DRY_RUN",
    "DISCORD_PROGRESS_WEBHOOK_URL",
    "DISCORD_COMMUNITY_WEBHOOK_URL",
    "DISCORD_FEEDBACK_WEBHOOK_URL",
    "DISCORD_OPS_WEBHOOK_URL",
    "SMTP_URL",
    "EMAIL_FROM",
)

# Webhook per Discord channel in the serve tests: the path on the wire says which channel got a post.
WEBHOOKS = {
    "discord-progress": ("DISCORD_PROGRESS_WEBHOOK_URL", "/api/webhooks/1001/progress-Tok3n"),
    "discord-community": ("DISCORD_COMMUNITY_WEBHOOK_URL", "/api/webhooks/1002/community-Tok3n"),
    "discord-feedback": ("DISCORD_FEEDBACK_WEBHOOK_URL", "/api/webhooks/1003/feedback-Tok3n"),
    "discord-ops": ("DISCORD_OPS_WEBHOOK_URL", "/api/webhooks/1004/ops-Tok3n"),
}

BASE = "https://stardust-app.com.br"

# The original's embeds, from its notification functions: every sample event's rule, channel
# and embed, field for field. ``timestamp: None`` means "the time of sending".
SENT = None
DISCORD_EVENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "planet_completed": (
        "planet-completed",
        "discord-progress",
        {
            "title": "🪐 Planeta Concluído!",
            "description": "Um usuário concluiu o planeta **Lógica de Programação**",
            "color": 3447003,
            "fields": [
                {"name": "Usuário", "value": "Ada Lovelace", "inline": True},
                {"name": "Link do perfil", "value": f"{BASE}/profile/ada-lovelace", "inline": True},
            ],
            "timestamp": SENT,
        },
    ),
    "space_completed": (
        "space-completed",
        "discord-progress",
        {
            "title": "🌌 Espaço Concluído!",
            "description": "Um usuário concluiu todo o espaço de exploração",
            "color": 16776960,
            "fields": [
                {"name": "Usuário", "value": "Ada Lovelace", "inline": True},
                {"name": "Link do perfil", "value": f"{BASE}/profile/ada-lovelace", "inline": True},
            ],
            "timestamp": SENT,
        },
    ),
    "feedback_report_sent": (
        "feedback-report-sent",
        "discord-feedback",
        {
            "title": "Novo Feedback de Bug",
            "description": "O quiz do planeta 3 marca uma resposta certa como errada.",
            "color": 16711680,
            "fields": [
                {"name": "Autor", "value": "Grace Hopper", "inline": True},
                {"name": "Link para o perfil", "value": f"{BASE}/profile/grace-hopper", "inline": True},
                {"name": "Link para o ver o feedback", "value": f"{BASE}/reporting/feedback/rep_123", "inline": False},
            ],
            "image": {"url": "https://cdn.stardust-app.com.br/feedback/rep_123.png"},
            "timestamp": "2026-11-27T10:59:30+00:00",  # feedbackReportSentAt
        },
    ),
    "feedback_report_sent_anonymous": (
        "feedback-report-sent",
        "discord-feedback",
        {
            "title": "Novo Feedback de Sugerir Ideia",
            "description": "Seria ótimo ter um modo escuro.",
            "color": 16776960,
            "fields": [
                {"name": "Autor", "value": "Anônimo", "inline": True},
                {"name": "Link para o ver o feedback", "value": f"{BASE}/reporting/feedback/rep_124", "inline": False},
            ],
            "timestamp": "2026-11-27T11:04:10+00:00",
        },
    ),
    "challenge_posted": (
        "challenge-posted",
        "discord-community",
        {
            "title": "🎯 Novo Desafio Criado!",
            "description": "Um novo desafio foi criado pelo sistema: **Inverter uma lista**",
            "color": 5763719,
            "fields": [
                {"name": "Título", "value": "Inverter uma lista", "inline": False},
                {
                    "name": "Link do desafio",
                    "value": f"{BASE}/challenging/challenges/inverter-uma-lista/challenge",
                    "inline": False,
                },
                {"name": "Autor", "value": "Linus", "inline": False},
            ],
            "timestamp": SENT,
        },
    ),
    "challenge_posted_anonymous": (
        "challenge-posted",
        "discord-community",
        {
            "title": "🎯 Novo Desafio Criado!",
            "description": "Um novo desafio foi criado pelo sistema: **Soma dos quadrados**",
            "color": 5763719,
            "fields": [
                {"name": "Título", "value": "Soma dos quadrados", "inline": False},
                {
                    "name": "Link do desafio",
                    "value": f"{BASE}/challenging/challenges/soma-dos-quadrados/challenge",
                    "inline": False,
                },
                {"name": "Autor", "value": "Sistema", "inline": False},
            ],
            "timestamp": SENT,
        },
    ),
    "user_created": (
        "user-created",
        "discord-community",
        {
            "title": "Usuário criado",
            "description": "Um novo usuario concluiu o onboarding inicial da plataforma.",
            "color": 3066993,
            "fields": [
                {"name": "Nome de usuário", "value": "Katherine Johnson", "inline": False},
                {"name": "Perfil", "value": f"{BASE}/profile/katherine-johnson", "inline": False},
            ],
            "timestamp": SENT,
        },
    ),
    "feedback_user_message_created": (
        "feedback-user-message",
        "discord-feedback",
        {
            "title": "Nova resposta em feedback",
            "description": "O usuário enviou uma nova mensagem.",
            "color": 3447003,
            "fields": [
                {"name": "Reporte", "value": "rep_123", "inline": True},
                {"name": "Mensagem", "value": "msg_9", "inline": True},
                {"name": "Usuário", "value": "Grace Hopper", "inline": True},
                {"name": "Anexos", "value": "Sim", "inline": True},
            ],
            "timestamp": SENT,
        },
    ),
}


def report_data(report_id: str, content: str, intent: str, **extra: Any) -> dict[str, Any]:
    """A feedback report's data: ``extra`` gives ``author`` and, if any, ``screenshot``."""
    return {
        "feedbackReportId": report_id,
        "feedbackReportContent": content,
        "feedbackReportIntent": intent,
        "feedbackReportSentAt": "2026-11-28T09:00:00.000Z",
        **extra,
    }


def report_fields(author: str, report_id: str, slug: str | None = None) -> list[dict[str, Any]]:
    profile = [{"name": "Link para o perfil", "value": f"{BASE}/profile/{slug}", "inline": True}] if slug else []
    return [
        {"name": "Autor", "value": author, "inline": True},
        *profile,
        {"name": "Link para o ver o feedback", "value": f"{BASE}/reporting/feedback/{report_id}", "inline": False},
    ]


def learner_message_fields(report_id: str, user: str, attachments: str) -> list[dict[str, Any]]:
    return [
        {"name": "Reporte", "value": report_id, "inline": True},
        {"name": "Mensagem", "value": "msg_1", "inline": True},
        {"name": "Usuário", "value": user, "inline": True},
        {"name": "Anexos", "value": attachments, "inline": True},
    ]


GRACE = {"name": "Grace Hopper", "slug": "grace-hopper"}
SCREENSHOT = "https://cdn.stardust-app.com.br/feedback/rep_203.png"
NOTE = "O usuário enviou uma nova mensagem."
REPORT_SENT = "2026-11-28T09:00:00+00:00"

# Events beyond the samples, for the branches of the original's functions, delivered in the
# same router run and checked on the wire like the samples: name -> (event, channel, embed).
# Each has its own description or first field, which tells its post apart on the wire.
WIRE_VARIANTS: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    # intent "other"; author.entity absent: "Anônimo", no profile link; no screenshot key: no image
    "report_other_entity_absent": (
        event_object(
            "reporting/feedback-report.sent",
            "evt-report-other",
            report_data("rep_201", "Outro assunto.", "other", author={"id": "u_50"}),
        ),
        "discord-feedback",
        {
            "title": "Novo Feedback de Outro",
            "description": "Outro assunto.",
            "color": 65280,
            "fields": report_fields("Anônimo", "rep_201"),
            "timestamp": REPORT_SENT,
        },
    ),
    # an intent the original does not name: blue, shown as written; slug null: no profile link;
    # screenshot null: no image
    "report_unknown_intent_slug_null": (
        event_object(
            "reporting/feedback-report.sent",
            "evt-report-question",
            report_data(
                "rep_202",
                "Uma pergunta.",
                "question",
                author={"id": "u_42", "entity": {**GRACE, "slug": None}},
                screenshot=None,
            ),
        ),
        "discord-feedback",
        {
            "title": "Novo Feedback de question",
            "description": "Uma pergunta.",
            "color": 3447003,
            "fields": report_fields("Grace Hopper", "rep_202"),
            "timestamp": REPORT_SENT,
        },
    ),
    # no slug key: the name but no profile link; the screenshot as image
    "report_no_slug": (
        event_object(
            "reporting/feedback-report.sent",
            "evt-report-noslug",
            report_data(
                "rep_203",
                "Sem slug.",
                "bug",
                author={"id": "u_42", "entity": {"name": "Grace Hopper"}},
                screenshot=SCREENSHOT,
            ),
        ),
        "discord-feedback",
        {
            "title": "Novo Feedback de Bug",
            "description": "Sem slug.",
            "color": 16711680,
            "fields": report_fields("Grace Hopper", "rep_203"),
            "image": {"url": SCREENSHOT},
            "timestamp": REPORT_SENT,
        },
    ),
    # entity null (as in the anonymous sample), screenshot null: "Anônimo", no profile link, no image
    "report_entity_null": (
        event_object(
            "reporting/feedback-report.sent",
            "evt-report-null",
            report_data("rep_204", "Autor nulo.", "idea", author={"id": "u_51", "entity": None}, screenshot=None),
        ),
        "discord-feedback",
        {
            "title": "Novo Feedback de Sugerir Ideia",
            "description": "Autor nulo.",
            "color": 16776960,
            "fields": report_fields("Anônimo", "rep_204"),
            "timestamp": REPORT_SENT,
        },
    ),
    # a learner's message with only the required fields: "Usuário" stands in, no attachments
    "learner_message_fields_absent": (
        event_object("feedback.user.message.created", "evt-umsg-absent", {"reportId": "rep_301", "messageId": "msg_1"}),
        "discord-feedback",
        {
            "title": "Nova resposta em feedback",
            "description": NOTE,
            "color": 3447003,
            "fields": learner_message_fields("rep_301", "Usuário", "Não"),
            "timestamp": SENT,
        },
    ),
    "learner_message_fields_null": (
        event_object(
            "feedback.user.message.created",
            "evt-umsg-null",
            {
                "reportId": "rep_302",
                "messageId": "msg_1",
                "userName": None,
                "preview": None,
                "hasAttachments": None,
                "conversationUrl": None,
            },
        ),
        "discord-feedback",
        {
            "title": "Nova resposta em feedback",
            "description": NOTE,
            "color": 3447003,
            "fields": learner_message_fields("rep_302", "Usuário", "Não"),
            "timestamp": SENT,
        },
    ),
    "learner_message_no_attachments": (
        event_object(
            "feedback.user.message.created",
            "evt-umsg-false",
            {"reportId": "rep_303", "messageId": "msg_1", "userName": "Ada Lovelace", "hasAttachments": False},
        ),
        "discord-feedback",
        {
            "title": "Nova resposta em feedback",
            "description": NOTE,
            "color": 3447003,
            "fields": learner_message_fields("rep_303", "Ada Lovelace", "Não"),
            "timestamp": SENT,
        },
    ),
    # challengeAuthor.entity absent (the sample has it null): "Sistema"
    "challenge_entity_absent": (
        event_object(
            "challenging/challenge.posted",
            "evt-challenge-noentity",
            {"challengeSlug": "fizzbuzz", "challengeTitle": "FizzBuzz", "challengeAuthor": {"id": "system"}},
        ),
        "discord-community",
        {
            "title": "🎯 Novo Desafio Criado!",
            "description": "Um novo desafio foi criado pelo sistema: **FizzBuzz**",
            "color": 5763719,
            "fields": [
                {"name": "Título", "value": "FizzBuzz", "inline": False},
                {
                    "name": "Link do desafio",
                    "value": f"{BASE}/challenging/challenges/fizzbuzz/challenge",
                    "inline": False,
                },
                {"name": "Autor", "value": "Sistema", "inline": False},
            ],
            "timestamp": SENT,
        },
    ),
}

# What a Discord post carries besides the embed: no username or avatar_url (the webhook's own
# name and avatar, as the original posts), no content (embeds only), mentions disabled, and
# apprise's webhook options tts (off) and wait.
PAYLOAD_KEYS = ["allowed_mentions", "embeds", "tts", "wait"]


def check_payload(payload: dict[str, Any], what: str) -> None:
    for key in ("username", "avatar_url", "content"):
        assert key not in payload, f"{what}: {key} = {payload[key]!r}"
    assert sorted(payload) == PAYLOAD_KEYS, what
    assert payload["allowed_mentions"] == {"parse": []}, what
    assert payload["tts"] is False, what


def wire_key(embed: dict[str, Any]) -> tuple[str, str]:
    """What tells one post from the others on the wire: its description and first field's value."""
    return embed["description"], embed["fields"][0]["value"]


# The original's failure embed; the description is the error.
FAILURE_EMBED = {
    "title": "🚨 Erro Interno Detectado",
    "color": 16711680,
    "fields": [{"name": "Aplicação", "value": "server", "inline": True}],
    "timestamp": SENT,
}

# The errors the failure embeds carry, in full: the sample planet without userName (schema), and
# a user_created post that Discord refuses with 404 "Unknown Webhook".
SCHEMA_ERROR = "data.userName: required property missing"
REFUSED_ERROR = "HTTP 404 Not Found"

# The events the original published, by sample file: `space/completed.planet` and so on.
EVENT_TYPES = {
    "planet_completed": "space/completed.planet",
    "space_completed": "space/completed.space",
    "feedback_report_sent": "reporting/feedback-report.sent",
    "feedback_report_sent_anonymous": "reporting/feedback-report.sent",
    "challenge_posted": "challenging/challenge.posted",
    "challenge_posted_anonymous": "challenging/challenge.posted",
    "user_created": "profile/user.created",
    "feedback_user_message_created": "feedback.user.message.created",
    "feedback_message_created": "feedback.message.created",
}


def check_embed(actual: dict[str, Any], expected: dict[str, Any], sent_after: datetime, sent_before: datetime) -> None:
    """``actual`` is ``expected`` field by field; a ``None`` timestamp must fall in the sending window."""
    assert sorted(actual) == sorted(expected), "the embed has other keys than the original's"
    # Types as well as values: 3447003.0 == 3447003 and 1 == True in Python, but not to Discord.
    assert type(actual["color"]) is int, f"color {actual['color']!r} is not an int"
    for got in actual.get("fields", []):
        assert type(got["inline"]) is bool, f"field {got.get('name')!r}: inline {got.get('inline')!r} is not a bool"
    for key, value in expected.items():
        if key == "timestamp" and value is SENT:
            sent = datetime.fromisoformat(actual["timestamp"])
            assert sent.utcoffset() is not None, "a timestamp without a time zone"
            assert sent_after <= sent <= sent_before, f"timestamp {sent} is not the time of sending"
        elif key == "fields":
            assert len(actual["fields"]) == len(value), [f["name"] for f in actual["fields"]]
            for got, want in zip(actual["fields"], value, strict=True):
                assert got == want, f"field {want['name']!r}"
        else:
            assert actual[key] == value, key


@pytest.mark.parametrize(("bad", "message"), [("float colour", "is not an int"), ("integer inline", "is not a bool")])
def test_the_embed_check_tells_types_apart(bad: str, message: str) -> None:
    # No template can put either on the wire (the router refuses a float colour and turns
    # `inline: 0` into false), but == cannot see them: 3447003.0 == 3447003 and 1 == True.
    sent = datetime(2026, 11, 27, 10, 59, 30, tzinfo=UTC)
    want = {**DISCORD_EVENTS["planet_completed"][2], "timestamp": sent.isoformat()}
    check_embed(want, want, sent, sent)
    if bad == "float colour":
        got = {**want, "color": float(want["color"])}
    else:
        got = {**want, "fields": [{**field, "inline": int(field["inline"])} for field in want["fields"]]}
    assert got == want
    with pytest.raises(AssertionError, match=message):
        check_embed(got, want, sent, sent)


REPLY_SUBJECT = "Re: quiz on planet 3"
REPLY_TEXT = "Thanks for the report, Grace! We fixed the answer key for planet 3; your score was updated."
REPLY_URL = f"{BASE}/reporting/feedback/rep_123"


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example as on a fresh machine: none of its variables set."""
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def copy_example(root: Path) -> Path:
    shutil.copy(EXAMPLE / "rules.yaml", root / "rules.yaml")
    shutil.copytree(EXAMPLE / "templates", root / "templates")
    return root / "rules.yaml"


# ---------------------------------------------------------------------------------------------
# authoring: check, cases, render


def test_example_checks_clean_with_nothing_configured(clean_env: None) -> None:
    code, output = run_cli("check", "-c", str(EXAMPLE / "rules.yaml"))
    assert code == 0, output
    assert "rules:     7:" in output


def test_reading_an_undeclared_field_fails_check_with_the_template_line(clean_env: None, tmp_path: Path) -> None:
    config = copy_example(tmp_path)
    template = tmp_path / "templates" / "planet_completed.j2"
    lines = template.read_text().splitlines(keepends=True)
    [line_no] = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith("description:")]
    assert "data.planetName" in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace("data.planetName", "data.planetNmae")
    template.write_text("".join(lines))
    code, output = run_cli("check", "-c", str(config))
    assert code == 1, output
    assert f"planet_completed.j2:{line_no}: reads data.planetNmae" in output
    assert "did you mean 'planetName'?" in output


def test_cases_file_passes(clean_env: None) -> None:
    code, output = run_cli("test", "--cases", str(EXAMPLE / "cases.yaml"), "-c", str(EXAMPLE / "rules.yaml"))
    assert code == 0, output
    assert "12 passed, 0 failed" in output


def test_every_sample_event_matches_its_schema_and_fires_one_rule(clean_env: None) -> None:
    assert sorted(path.stem for path in EVENTS.glob("*.json")) == sorted(EVENT_TYPES)
    for path in sorted(EVENTS.glob("*.json")):
        assert json.loads(path.read_text())["type"] == EVENT_TYPES[path.stem], "not the original's event name"
        code, output = run_cli("test", str(path), "-c", str(EXAMPLE / "rules.yaml"), "--json")
        assert code == 0, f"{path.name}: {output}"  # 1 when the event fails its schema
        result = json.loads(output)
        assert "schema" not in result, path.name
        assert len(result["rules"]) == 1 and len(result["channels"]) == 1, path.name


def test_an_event_missing_a_field_fails_its_schema(clean_env: None, tmp_path: Path) -> None:
    event = sample("challenge_posted")
    del event["data"]["challengeAuthor"]["entity"]["slug"]
    event["data"]["challengeTitle"] = 7
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(event))
    code, output = run_cli("test", str(path), "-c", str(EXAMPLE / "rules.yaml"))
    assert code == 1, output
    assert "data.challengeAuthor.entity.slug: required property missing" in output
    assert "data.challengeTitle: expected string, got integer" in output


def test_a_challenge_author_is_an_object_never_null(clean_env: None, tmp_path: Path) -> None:
    # The original's challengeAuthor is `{id, entity?: {...} | null}`: only the entity may be null
    # or absent ("Sistema", checked on the wire). `challengeAuthor: null` fails the schema.
    event = sample("challenge_posted")
    event["data"]["challengeAuthor"] = None
    path = tmp_path / "no_author.json"
    path.write_text(json.dumps(event))
    code, output = run_cli("test", str(path), "-c", str(EXAMPLE / "rules.yaml"))
    assert code == 1, output
    assert "data.challengeAuthor: expected object, got null" in output


@pytest.mark.parametrize("name", sorted(DISCORD_EVENTS))
def test_render_shows_the_exact_discord_message(clean_env: None, name: str) -> None:
    rule, channel, embed = DISCORD_EVENTS[name]
    started = datetime.now(UTC)
    code, output = run_cli(
        "render",
        "--rule",
        rule,
        "--event",
        str(EVENTS / f"{name}.json"),
        "--channel",
        channel,
        "--json",
        "-c",
        str(EXAMPLE / "rules.yaml"),
    )
    assert code == 0, output
    [rendered] = json.loads(output)
    assert rendered["channel"] == channel and rendered["rich"] is True
    payload = rendered["payload"]
    assert "username" not in payload and "avatar_url" not in payload  # the webhook's own name and avatar
    [posted] = payload["embeds"]
    check_embed(posted, embed, started, datetime.now(UTC))
    assert "content" not in payload  # embeds only: nothing in data can ping anyone


def test_optional_fields_of_a_learner_message_may_be_absent_or_null(clean_env: None, tmp_path: Path) -> None:
    config = str(EXAMPLE / "rules.yaml")
    for variant, data in {
        "absent": {"reportId": "rep_7", "messageId": "msg_1"},
        "null": {
            "reportId": "rep_7",
            "messageId": "msg_1",
            "userName": None,
            "preview": None,
            "hasAttachments": None,
            "conversationUrl": None,
        },
    }.items():
        path = tmp_path / f"{variant}.json"
        path.write_text(json.dumps(event_object("feedback.user.message.created", "e", data)))
        code, output = run_cli(
            "render", "--rule", "feedback-user-message", "--event", str(path), "--json", "-c", config
        )
        assert code == 0, output
        [embed] = json.loads(output)[0]["payload"]["embeds"]
        assert embed["title"] == "Nova resposta em feedback", variant
        assert embed["fields"] == [
            {"name": "Reporte", "value": "rep_7", "inline": True},
            {"name": "Mensagem", "value": "msg_1", "inline": True},
            {"name": "Usuário", "value": "Usuário", "inline": True},  # the original's stand-in name
            {"name": "Anexos", "value": "Não", "inline": True},
        ], variant


@pytest.mark.parametrize("variant", ["absent", "null", "no slug"])
def test_an_anonymous_feedback_report_names_no_author_and_links_no_profile(
    clean_env: None, tmp_path: Path, variant: str
) -> None:
    # The original's feedback event nests the author: `author: {id, entity: {name, slug} | null}`.
    event = sample("feedback_report_sent")
    author = event["data"]["author"]
    if variant == "absent":
        del author["entity"]
    elif variant == "null":
        author["entity"] = None
    else:
        del author["entity"]["slug"]
    del event["data"]["screenshot"]
    event["data"]["feedbackReportIntent"] = "question"  # not one the original names
    path = tmp_path / "report.json"
    path.write_text(json.dumps(event))
    code, output = run_cli(
        "render", "--rule", "feedback-report-sent", "--event", str(path), "--json", "-c", str(EXAMPLE / "rules.yaml")
    )
    assert code == 0, output
    [embed] = json.loads(output)[0]["payload"]["embeds"]
    assert embed["color"] == 3447003  # any other intent
    assert embed["title"] == "Novo Feedback de question"
    assert "image" not in embed
    expected_author = "Grace Hopper" if variant == "no slug" else "Anônimo"
    assert embed["fields"] == [
        {"name": "Autor", "value": expected_author, "inline": True},
        {"name": "Link para o ver o feedback", "value": f"{BASE}/reporting/feedback/rep_123", "inline": False},
    ]


@pytest.mark.parametrize(
    ("intent", "title", "color"),
    [("bug", "Bug", 16711680), ("idea", "Sugerir Ideia", 16776960), ("other", "Outro", 65280)],
)
def test_feedback_report_title_and_colour_follow_the_intent(
    clean_env: None, tmp_path: Path, intent: str, title: str, color: int
) -> None:
    event = sample("feedback_report_sent")
    event["data"]["feedbackReportIntent"] = intent
    path = tmp_path / "report.json"
    path.write_text(json.dumps(event))
    code, output = run_cli(
        "render", "--rule", "feedback-report-sent", "--event", str(path), "--json", "-c", str(EXAMPLE / "rules.yaml")
    )
    assert code == 0, output
    [embed] = json.loads(output)[0]["payload"]["embeds"]
    assert (embed["title"], embed["color"]) == (f"Novo Feedback de {title}", color)


def test_reply_email_subject_and_text(clean_env: None, tmp_path: Path) -> None:
    config = str(EXAMPLE / "rules.yaml")
    code, output = run_cli(
        "render",
        "--rule",
        "feedback-reply-email",
        "--event",
        str(EVENTS / "feedback_message_created.json"),
        "--json",
        "-c",
        config,
    )
    assert code == 0, output
    [email] = json.loads(output)
    assert email["channel"] == "learner-email"
    assert email["title"] == REPLY_SUBJECT
    assert email["body"] == f"{REPLY_TEXT}\n\nRead the whole conversation and answer: {REPLY_URL}"
    # The envelope comes from the template's {% block email %}: the learner is the recipient.
    assert email["rich"] is True
    assert email["payload"]["to"] == ["grace@example.com"]
    assert email["payload"]["subject"] == REPLY_SUBJECT
    # Without a subject, on a closed conversation:
    event = sample("feedback_message_created")
    del event["data"]["subject"]
    event["data"]["isClosed"] = True
    path = tmp_path / "closed.json"
    path.write_text(json.dumps(event))
    code, output = run_cli("render", "--rule", "feedback-reply-email", "--event", str(path), "--json", "-c", config)
    assert code == 0, output
    [email] = json.loads(output)
    assert email["title"] == "New reply to your feedback"
    assert email["body"] == f"{REPLY_TEXT}\n\nThis conversation is now closed. Read it again: {REPLY_URL}"


def test_data_cannot_break_or_extend_the_discord_message(clean_env: None, tmp_path: Path) -> None:
    # Values reach the embed as written, as in the original (no markdown escaping), but they
    # cannot add keys or fields (`| yaml`) or send a link elsewhere (slugs are URL-encoded).
    event = sample("planet_completed")
    event["data"] = {
        "userSlug": "../admin?x=1",
        "userName": 'Ann: "the" *admin*\n    color: 1',
        "planetName": "- [x](https://evil.example)",
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(event))
    code, output = run_cli(
        "render", "--rule", "planet-completed", "--event", str(path), "--json", "-c", str(EXAMPLE / "rules.yaml")
    )
    assert code == 0, output
    [embed] = json.loads(output)[0]["payload"]["embeds"]
    assert embed["color"] == 3447003
    assert embed["fields"] == [
        {"name": "Usuário", "value": 'Ann: "the" *admin*\n    color: 1', "inline": True},
        {"name": "Link do perfil", "value": f"{BASE}/profile/..%2Fadmin%3Fx%3D1", "inline": True},
    ]
    assert embed["description"] == "Um usuário concluiu o planeta **- [x](https://evil.example)**"


# ---------------------------------------------------------------------------------------------
# serving


def serve_env(root: Path, discord: HttpSink, **extra: str) -> dict[str, str]:
    env = intercept.subprocess_env({"discord.com": discord.url})
    for name in EXAMPLE_ENV:
        env.pop(name, None)
    env["ROUTER_STATE_URL"] = f"sqlite:///{root / 'state.db'}"
    for var, path in WEBHOOKS.values():
        env[var] = f"https://discord.com{path}"
    env.update(extra)
    return env


def posts_to(discord: HttpSink, channel: str) -> list[Recorded]:
    path = WEBHOOKS[channel][1]
    return [r for r in discord.requests if r.path == path]


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink().running() as server:
        yield server


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


def dead_letters(root: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [ROUTER, "dlq", "list", "--json", "-c", str(root / "rules.yaml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)
    return letters


Post = tuple[str, dict[str, Any], str, dict[str, Any]]  # name, event, channel, embed
PER_WAVE = 4
"""Posts per channel in one wave. A Discord channel sends one post every 0.45 s (5 per 2 s, with
headroom); a post that would wait more than 2 s for its slot is folded into a summary instead."""


def in_waves(posts: list[Post]) -> list[list[Post]]:
    """``posts`` in order, in waves of at most PER_WAVE posts per channel."""
    waves: list[list[Post]] = []
    for post in posts:
        for wave in waves:
            if sum(1 for other in wave if other[2] == post[2]) < PER_WAVE:
                wave.append(post)
                break
        else:
            waves.append([post])
    return waves


@pytest.mark.integration
async def test_serves_every_job_on_rabbitmq(
    tmp_path: Path,
    rabbitmq_url: str,
    names: dict[str, str],
    smtp: SmtpSink,
    routers: list[RouterProcess],
) -> None:
    copy_example(tmp_path)
    async with HttpSink() as discord:
        env = serve_env(
            tmp_path,
            discord,
            ROUTER_BROKER_URL=rabbitmq_url,
            ROUTER_EXCHANGE=names["exchange"],
            ROUTER_QUEUE=names["queue"],
            SMTP_URL=f"mailto://127.0.0.1:{smtp.port}",
            EMAIL_FROM="Stardust <noreply@stardust-app.com.br>",
        )
        router = RouterProcess(tmp_path, env=env)
        routers.append(await router.start())

        async with Publisher(rabbitmq_url, exchange=names["exchange"], source="platform/tests") as publisher:

            async def publish(event: dict[str, Any], **changes: Any) -> str:
                fields = {"id": event["id"], **changes}
                if "time" in event:
                    fields.setdefault("time", datetime.fromisoformat(event["time"]))
                return await publisher.publish(event["type"], event["data"], **fields)

            reply = sample("feedback_message_created")
            await publish(reply)

            # The samples and the variants, in waves that Discord's pace (one send per 0.45 s on
            # a channel) lets through without folding: each wave is sent before the next.
            posts = [(name, sample(name), channel, embed) for name, (_rule, channel, embed) in DISCORD_EVENTS.items()]
            posts += [(name, event, channel, embed) for name, (event, channel, embed) in WIRE_VARIANTS.items()]
            expected = {name: (channel, embed) for name, _event, channel, embed in posts}
            assert len({wire_key(embed) for _channel, embed in expected.values()}) == len(expected)
            started = datetime.now(UTC)
            for wave in in_waves(posts):
                sent = len(discord.requests)
                for _name, event, _channel, _embed in wave:
                    await publish(event)
                await discord.wait_for(sent + len(wave), timeout=30)
                await asyncio.sleep(0.5)  # the channel's next slot is free

            # Every Discord message on the wire, in the channel of its rule, field by field.
            received = datetime.now(UTC)
            for name, (channel, embed) in expected.items():
                matching = [r for r in posts_to(discord, channel) if wire_key(r.json()["embeds"][0]) == wire_key(embed)]
                assert len(matching) == 1, name
                [posted] = matching
                assert posted.original_host == "discord.com"
                payload = posted.json()
                check_payload(payload, name)
                [actual] = payload["embeds"]
                check_embed(actual, embed, started, received)

            # The reply, emailed to the learner the event names.
            [mail] = await asyncio.to_thread(smtp.wait_for, 1, 30.0)
            check_reply_email(mail)

            # The platform publishes the same reply again (a new event, the same idempotencyKey): no second email.
            await publish(reply, id="evt-fmsg-1-again")

            async def skipped() -> float:
                samples = await scrape_metrics(router)
                key = ("router_flow_decisions_total", (("decision", "skipped"), ("rule", "feedback-reply-email")))
                return samples.get(key, 0.0)

            deadline = time.monotonic() + 20
            while await skipped() < 1:
                assert time.monotonic() < deadline, "the duplicate reply was not skipped"
                await asyncio.sleep(0.1)
            assert len(smtp.messages) == 1

            # An event missing a required field: dead-lettered (schema), and ops hears about it.
            broken = sample("planet_completed")
            del broken["data"]["userName"]
            failed_at = datetime.now(UTC)
            await publish(broken, id="evt-planet-broken")
            await until(lambda: len(posts_to(discord, "discord-ops")) == 1, timeout=20)
            [notice] = posts_to(discord, "discord-ops")
            payload = notice.json()
            check_payload(payload, "schema failure")
            [embed] = payload["embeds"]
            check_embed(embed, {**FAILURE_EMBED, "description": SCHEMA_ERROR}, failed_at, datetime.now(UTC))
            assert "Lógica de Programação" not in json.dumps(payload)  # never a value from the refused event

            # A delivery Discord refuses for good (404: the webhook was deleted): dead-lettered, ops hears.
            discord.reply(Reply(404, {"message": "Unknown Webhook", "code": 10015}))
            failed_at = datetime.now(UTC)
            await publish(sample("user_created"), id="evt-user-refused")
            await until(lambda: len(posts_to(discord, "discord-ops")) == 2, timeout=20)
            payload = posts_to(discord, "discord-ops")[1].json()
            check_payload(payload, "delivery failure")
            [embed] = payload["embeds"]
            check_embed(embed, {**FAILURE_EMBED, "description": REFUSED_ERROR}, failed_at, datetime.now(UTC))

        letters = {letter["event_id"]: letter for letter in await asyncio.to_thread(dead_letters, tmp_path, env)}
        assert set(letters) == {"evt-planet-broken", "evt-user-refused"}
        assert letters["evt-planet-broken"]["reason"] == "schema"
        assert letters["evt-planet-broken"]["error"] == SCHEMA_ERROR
        assert letters["evt-user-refused"]["error"] == REFUSED_ERROR
        assert letters["evt-user-refused"]["reason"] == "permanent"
        assert letters["evt-user-refused"]["channel"] == "discord-community"

        # Nothing else reached Discord: one post per event and per failure, none for the duplicate reply.
        assert len(discord.requests) == len(DISCORD_EVENTS) + len(WIRE_VARIANTS) + 3
        for token in ("progress-Tok3n", "community-Tok3n", "feedback-Tok3n", "ops-Tok3n"):
            assert token not in router.logs()


def check_reply_email(mail: Received) -> None:
    assert mail.rcpt_tos == ["grace@example.com"]
    message = mail.message
    assert message["To"] == "grace@example.com"
    assert message["Subject"] == REPLY_SUBJECT
    assert message["From"] == "Stardust <noreply@stardust-app.com.br>"
    text = message.get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert REPLY_TEXT in content
    assert REPLY_URL in content


async def test_dry_run_from_the_environment_posts_nothing(
    tmp_path: Path, smtp: SmtpSink, routers: list[RouterProcess]
) -> None:
    copy_example(tmp_path)
    async with HttpSink() as discord:
        env = serve_env(
            tmp_path,
            discord,
            ROUTER_DRY_RUN="true",
            SMTP_URL=f"mailto://127.0.0.1:{smtp.port}",
        )
        env.pop("ROUTER_HTTP", None)
        router = RouterProcess(tmp_path, env=env)
        routers.append(await router.start())
        await router.wait_for_log(lambda r: str(r.get("msg", "")).startswith("dry run: nothing will be sent"))
        events = [sample("planet_completed"), sample("feedback_message_created")]
        async with aiohttp.ClientSession() as session, session.post(f"{router.url}/events", json=events) as response:
            assert response.status == 202, await response.text()
        for event, channel in (("evt-planet-1", "discord-progress"), ("evt-fmsg-1", "learner-email")):
            line = await router.wait_for_log(
                lambda r, e=event: r.get("logger") == "router.dry_run" and r.get("event_id") == e, timeout=30
            )
            assert line["channel"] == channel
        planet = await router.wait_for_log(lambda r: r.get("event_id") == "evt-planet-1" and "payload" in r)
        assert "Lógica de Programação" in planet["payload"]
        # The dry-run line is the last stage: neither message went out.
        assert discord.requests == [] and smtp.messages == []
