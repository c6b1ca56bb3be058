"""Failing sends never reveal a webhook token or a password: not in reasons, logs or exceptions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from router.channels.base import Channel
from router.channels.discord import DiscordChannel, DiscordConfig
from router.channels.email import EmailChannel, EmailConfig
from router.channels.slack import SlackChannel, SlackConfig
from router.channels.webhook import WebhookChannel, WebhookConfig
from router.core.message import Message, Outcome
from router.core.redact import redact_url, scrub
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply, free_port
from tests.fakes.smtp_sink import SmtpSink

DISCORD_TOKEN = "DiscordT0ken_abcdefghijklmnop-XYZ"
SLACK_TOKEN = "SlackT0kenQRSTUVWXYZ0123456789"
HEADER_SECRET = "Bearer hdr-S3cret-0123456789"
PATH_TOKEN = "pathT0ken9876543210abcdef"
SMTP_PASSWORD = "Smtp-Pa55w0rd-!x"
SECRETS = (DISCORD_TOKEN, SLACK_TOKEN, HEADER_SECRET, "hdr-S3cret-0123456789", PATH_TOKEN, SMTP_PASSWORD)


@pytest.fixture
async def failing_sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(503, "upstream says: token=" + DISCORD_TOKEN)) as server:
        with intercept.redirect({"discord.com": server.url, "hooks.slack.com": server.url}):
            yield server


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret leaked: {text!r}"


async def send_and_close(channel: Channel) -> Outcome:
    try:
        return await channel.send(Message("title", "body"))
    finally:
        await channel.aclose()


async def test_no_secret_in_reasons_logs_or_exceptions(
    failing_sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, apprise's and urllib3's included
    dead_port = free_port()
    channels: list[Channel] = [
        DiscordChannel("d", DiscordConfig(type="discord", url=f"https://discord.com/api/webhooks/42/{DISCORD_TOKEN}")),
        SlackChannel("s", SlackConfig(type="slack", url=f"https://hooks.slack.com/services/T1/B2/{SLACK_TOKEN}")),
        WebhookChannel(
            "w",
            WebhookConfig(
                type="webhook",
                url=f"{failing_sink.url}/hooks/{PATH_TOKEN}",
                headers={"Authorization": HEADER_SECRET},
            ),
        ),
        WebhookChannel(
            "w-down",
            WebhookConfig(
                type="webhook",
                url=f"http://127.0.0.1:{dead_port}/hooks/{PATH_TOKEN}",
                headers={"Authorization": HEADER_SECRET},
            ),
        ),
        DiscordChannel(
            "d-down",
            DiscordConfig(type="discord", url=f"https://discordapp.com/api/webhooks/42/{DISCORD_TOKEN}"),
        ),
    ]
    outcomes: list[Outcome] = []
    with intercept.redirect({"discordapp.com": f"http://127.0.0.1:{dead_port}"}):
        for channel in channels:
            outcomes.append(await send_and_close(channel))
    with SmtpSink(credentials=("router", "another-password")).running() as smtp:
        email = EmailChannel(
            "e",
            EmailConfig(
                type="email",
                url=f"mailto://router:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?from=router@example.com",
                to=["a@example.com"],
            ),
        )
        outcomes.append(await send_and_close(email))
        channels.append(email)

    assert [o.status for o in outcomes] == ["retry", "retry", "retry", "retry", "retry", "failed"]
    assert len(failing_sink.requests) >= 3  # the failures really reached the server
    for outcome in outcomes:
        assert_clean(outcome.reason)
    for channel in channels:
        assert_clean(channel.describe())
    assert caplog.records, "apprise and urllib3 log at DEBUG: the test must see their records"
    for record in caplog.records:
        assert_clean(record.getMessage())
        assert_clean(record.exc_text or "")
    assert_clean(caplog.text)


def test_setup_errors_do_not_quote_the_url() -> None:
    # A URL apprise itself refuses: the error names the channel, never the token.
    with pytest.raises(Exception) as info:
        DiscordChannel("d", DiscordConfig.model_construct(type="discord", url="https://discord.com/api/webhooks/1/"))
    assert_clean(str(info.value))


def test_redact_and_scrub() -> None:
    assert redact_url("https://user:pw@hooks.example.com:8443/a/b?token=x#f") == "https://hooks.example.com:8443"
    assert redact_url("mailtos://user:pw@smtp.example.com") == "mailtos://smtp.example.com"
    assert redact_url("discord://123/TOKEN") == "discord://***"
    assert redact_url("::not a url") == "<url>"
    text = f"POST /api/webhooks/1/{DISCORD_TOKEN} failed; see https://u:p@example.com/x?y=z"
    assert scrub(text, [DISCORD_TOKEN]) == "POST /api/webhooks/1/*** failed; see https://example.com"
    # URL-encoded forms are caught too.
    assert scrub("pass=Smtp-Pa55w0rd-%21x", [SMTP_PASSWORD]) == "pass=***"
