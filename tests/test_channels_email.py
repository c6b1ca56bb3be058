"""The email channel end to end: apprise talks SMTP to a local aiosmtpd server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.email import RECIPIENT_OBJECTS_CACHED, EmailChannel, EmailConfig
from router.core.errors import TemplateError
from router.core.message import Message, Outcome
from router.templating.filters import BUILTIN_FILTERS
from router.templating.native.email import EmailMessage
from router.templating.templates import Templates
from tests.fakes.http_sink import free_port
from tests.fakes.smtp_sink import SmtpSink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(credentials=("router", "Sm7p-Pa55word")).running() as server:
        yield server


def channel_for(url: str, **options: Any) -> EmailChannel:
    options.setdefault("from", "Router <router@example.com>")
    return EmailChannel("team-email", EmailConfig(type="email", url=url, **options))


async def send(url: str, message: Message, **options: Any) -> Outcome:
    channel = channel_for(url, **options)
    try:
        return await channel.send(message)
    finally:
        await channel.aclose()


async def test_html_email_with_text_and_html_parts(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    message = Message("Planet  completed", "Alice finished Mars & <Venus>\nwell done\n\nsee you")
    outcome = await send(url, message, to=["team@example.com"], cc=["boss@example.com"])
    assert outcome.ok
    [received] = smtp.messages
    assert received.mail_from == "router@example.com"
    assert sorted(received.rcpt_tos) == ["boss@example.com", "team@example.com"]
    mail = received.message
    assert mail["Subject"] == "Planet completed"
    assert mail["To"] == "team@example.com"
    assert mail["Cc"] == "boss@example.com"
    assert mail["From"] == "Router <router@example.com>"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert "Alice finished Mars & <Venus>" in text.get_content()
    html_content = html.get_content()
    assert "<p>Alice finished Mars &amp; &lt;Venus&gt;<br>well done</p>" in html_content
    assert "<p>see you</p>" in html_content


async def test_text_email(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    outcome = await send(url, Message("Hi", "plain *text*"), to=["a@example.com"], format="text")
    assert outcome.ok
    mail = smtp.messages[0].message
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().strip() == "plain *text*"


async def test_one_message_per_recipient_with_bcc(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}?to=first@example.com"
    outcome = await send(url, Message("Hi", "b"), to=["second@example.com"], bcc=["audit@example.com"])
    assert outcome.ok
    assert sorted(m.message["To"] for m in smtp.messages) == ["first@example.com", "second@example.com"]
    assert all("audit@example.com" in m.rcpt_tos for m in smtp.messages)
    assert all(m.message["Bcc"] is None for m in smtp.messages)


async def test_wrong_password_is_permanent(smtp: SmtpSink) -> None:
    outcome = await send(f"mailto://router:wrong-pass@127.0.0.1:{smtp.port}", Message("t", "b"), to=["a@example.com"])
    assert outcome == Outcome.permanent("SMTP authentication failed (535)")
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("reply", "status", "reason"),
    [
        ("451 4.3.0 try again later", "retry", "SMTP message refused (451)"),
        ("554 5.7.1 rejected", "failed", "SMTP message refused (554)"),
    ],
)
async def test_smtp_replies(smtp: SmtpSink, reply: str, status: str, reason: str) -> None:
    smtp.data_reply = reply
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    outcome = await send(url, Message("t", "b"), to=["a@example.com"])
    assert (outcome.status, outcome.reason) == (status, reason)


async def test_refused_recipient(smtp: SmtpSink) -> None:
    smtp.rcpt_reply = "550 5.1.1 no such user"
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    outcome = await send(url, Message("t", "b"), to=["ghost@example.com"])
    assert outcome == Outcome.permanent("SMTP refused 1 recipient (550)")


async def test_unreachable_server_is_retryable() -> None:
    outcome = await send(f"mailto://127.0.0.1:{free_port()}", Message("t", "b"), to=["a@example.com"])
    assert outcome == Outcome.retryable("connection refused")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "smtp://example.com", "to": ["a@example.com"]}, "expected an apprise email URL"),
        ({"url": "https://discord.com/api/webhooks/1/x", "to": ["a@example.com"]}, "use `type: discord`"),
        ({"url": "mailtos://smtp.example.com", "to": ["not-an-address"]}, "is not an email address"),
        ({"url": "mailtos://smtp.example.com", "to": ["a@example.com"], "format": "rtf"}, "format"),
        ({"url": "mailtos://smtp.example.com", "to": ["a@example.com"], "reply": "x"}, "reply"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        EmailConfig(type="email", **options)
    assert message in str(info.value)


def test_describe_hides_the_password() -> None:
    channel = channel_for("mailtos://user:Hunter2Secret@smtp.example.com", to=["a@example.com"])
    assert channel.describe() == "team-email (email via mailtos://smtp.example.com, 1 recipient)"


# -- recipients from the template: {% block email %} ------------------------------------------


def with_payload(payload: dict[str, Any], title: str = "Re: your feedback", body: str = "Thanks!") -> Message:
    return Message(title, body, payload=EmailMessage.model_validate(payload).wire())


async def test_template_recipients_replace_the_channels(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    channel = channel_for(url, to=["team@example.com"], cc=["lead@example.com"])
    try:
        first = await channel.send(with_payload({"to": "grace@example.com", "reply_to": "support@example.com"}))
        second = await channel.send(with_payload({"to": ["linus@example.com"], "subject": "A new\nreply"}))
        plain = await channel.send(Message("Weekly", "report"))
    finally:
        await channel.aclose()
    assert first.ok and second.ok and plain.ok
    by_recipient = {tuple(sorted(m.rcpt_tos)): m.message for m in smtp.messages}
    grace = by_recipient[("grace@example.com",)]
    assert grace["To"] == "grace@example.com"
    assert grace["Reply-To"] == "support@example.com"
    assert grace["Subject"] == "Re: your feedback"
    assert "Cc" not in grace  # the channel's own cc is for its own recipients only
    assert by_recipient[("linus@example.com",)]["Subject"] == "A new reply"  # one header line
    assert ("lead@example.com", "team@example.com") in by_recipient  # no block: the channel's recipients


async def test_a_channel_without_recipients_needs_them_from_the_template(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    channel = channel_for(url)
    try:
        missing = await channel.send(Message("t", "b"))
        given = await channel.send(with_payload({"to": "ada@example.com"}))
    finally:
        await channel.aclose()
    assert missing.status == "failed" and "no recipient" in missing.reason
    assert given.ok
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"]]


async def test_recipient_objects_are_reused_and_bounded(smtp: SmtpSink) -> None:
    url = f"mailto://router:Sm7p-Pa55word@127.0.0.1:{smtp.port}"
    channel = channel_for(url)
    try:
        first = channel.apprise_for(with_payload({"to": "a@example.com"}))
        assert channel.apprise_for(with_payload({"to": "a@example.com"})) is first
        for n in range(RECIPIENT_OBJECTS_CACHED + 1):
            channel.apprise_for(with_payload({"to": f"user{n}@example.com"}))
        assert channel.apprise_for(with_payload({"to": "a@example.com"})) is not first
        assert len(channel._by_recipients) <= RECIPIENT_OBJECTS_CACHED
    finally:
        await channel.aclose()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("to: {{ data.email|yaml }}", "is not an email address"),
        ("to: []", "needs at least one of"),
        ("tto: a@example.com", "tto"),
    ],
)
def test_bad_email_block_is_a_render_error(tmp_path: Path, block: str, message: str) -> None:
    (tmp_path / "reply.j2").write_text(
        "{% block title %}Hi{% endblock %}{% block body %}b{% endblock %}{% block email %}" + block + "{% endblock %}"
    )
    templates = Templates(tmp_path, BUILTIN_FILTERS)
    with pytest.raises(TemplateError) as info:
        templates.render(
            "reply", {"data": {"email": "not an address"}}, channel_type="email", payload_model=EmailMessage
        )
    assert message in str(info.value)
    assert "reply.j2" in str(info.value)


def test_email_block_renders_the_recipient_from_data(tmp_path: Path) -> None:
    (tmp_path / "reply.j2").write_text(
        "{% block title %}Re: {{ data.subject }}{% endblock %}{% block body %}{{ data.reply }}{% endblock %}"
        "{% block email %}to: {{ data.recipientEmail|yaml }}{% endblock %}"
    )
    rendered = Templates(tmp_path, BUILTIN_FILTERS).render(
        "reply",
        {"data": {"recipientEmail": "grace@example.com", "subject": "quiz", "reply": "Fixed."}},
        channel_type="email",
        payload_model=EmailMessage,
    )
    assert rendered.payload == {"to": ["grace@example.com"], "cc": [], "bcc": []}
    assert (rendered.title, rendered.body) == ("Re: quiz", "Fixed.")
