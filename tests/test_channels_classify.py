"""Failure classification: which failures are retried, how long to wait, and what the reason says."""

from __future__ import annotations

import smtplib
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from router.channels.apprise.capture import Capture, HttpExchange, RefusedRecipients, classify_capture
from router.channels.classify import (
    classify_exception,
    classify_smtp_exception,
    classify_status,
    parse_retry_after,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "expected", "reason"),
    [
        (200, "sent", "HTTP 200 OK"),
        (204, "sent", "HTTP 204 No Content"),
        (400, "failed", "HTTP 400 Bad Request"),
        (401, "failed", "HTTP 401 Unauthorized"),
        (403, "failed", "HTTP 403 Forbidden"),
        (404, "failed", "HTTP 404 Not Found"),
        (408, "retry", "HTTP 408 Request Timeout"),
        (429, "retry", "HTTP 429 Too Many Requests"),
        (500, "retry", "HTTP 500 Internal Server Error"),
        (502, "retry", "HTTP 502 Bad Gateway"),
        (503, "retry", "HTTP 503 Service Unavailable"),
        (599, "retry", "HTTP 599"),
    ],
)
def test_http_status(status: int, expected: str, reason: str) -> None:
    outcome = classify_status(status)
    assert (outcome.status, outcome.reason) == (expected, reason)


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1.5") == 1.5
    date = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(90.0)
    # A date in the past means "now", not a negative wait.
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), now=NOW) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after("1e9") == 86_400.0  # capped at a day


def test_429_retry_after_sources() -> None:
    assert classify_status(429, {"Retry-After": "7"}).retry_after == 7.0
    # Discord's JSON body, used when the header is missing.
    assert classify_status(429, {}, b'{"message": "rate limited", "retry_after": 2.5}').retry_after == 2.5
    assert classify_status(429, {"X-RateLimit-Reset-After": "3.25"}).retry_after == 3.25
    assert classify_status(429, {}, b"not json").retry_after is None
    assert classify_status(503, {"retry-after": "30"}).retry_after == 30.0


@pytest.mark.parametrize(
    ("exc", "expected", "reason"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "retry", "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "retry", "DNS lookup failed"),
        (TimeoutError(), "retry", "timeout after 10s"),
        (ConnectionResetError(104, "reset"), "retry", "connection reset"),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), "failed", "SMTP authentication failed (535)"),
        (smtplib.SMTPAuthenticationError(454, b"try later"), "retry", "SMTP authentication temporarily failed (454)"),
        (smtplib.SMTPSenderRefused(553, b"no", "a@b"), "failed", "SMTP sender refused (553)"),
        (smtplib.SMTPDataError(451, b"later"), "retry", "SMTP message refused (451)"),
        (smtplib.SMTPConnectError(421, b"busy"), "retry", "SMTP connect failed (421)"),
        (smtplib.SMTPServerDisconnected("gone"), "retry", "SMTP server disconnected"),
        (smtplib.SMTPNotSupportedError("no STARTTLS"), "failed", None),
        (smtplib.SMTPRecipientsRefused({"a@b": (550, b"no such user")}), "failed", "SMTP refused 1 recipient (550)"),
        (smtplib.SMTPRecipientsRefused({"a@b": (450, b"busy"), "c@d": (451, b"x")}), "retry", None),
    ],
)
def test_exceptions(exc: BaseException, expected: str, reason: str | None) -> None:
    outcome = classify_smtp_exception(exc, timeout=10.0)
    assert outcome.status == expected
    if reason is not None:
        assert outcome.reason == reason


def test_wrapped_exceptions_are_unwrapped() -> None:
    # requests wraps urllib3 which wraps the socket error; the cause decides.
    inner = ConnectionRefusedError(111, "Connection refused")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("Max retries exceeded with url: /api/webhooks/1/SECRET") from exc
    except RuntimeError as outer:
        outcome = classify_exception(outer)
    assert outcome.reason == "connection refused"
    assert "SECRET" not in outcome.reason


def test_capture_decisions() -> None:
    assert classify_capture(True, Capture()).ok
    # The last failure decides: a 429 then a 400 is a permanent failure.
    recorded = Capture([HttpExchange(429, {"retry-after": "1"}), HttpExchange(400)])
    assert classify_capture(False, recorded).status == "failed"
    recorded = Capture([HttpExchange(429, {"retry-after": "4"}), HttpExchange(429, {"retry-after": "5"})])
    assert classify_capture(False, recorded).retry_after == 5.0
    # A 2xx that apprise still calls a failure (Slack answering something but "ok").
    assert classify_capture(False, Capture([HttpExchange(200)])).status == "failed"
    # Nothing recorded at all: retried, never silently dropped.
    assert classify_capture(False, Capture()).status == "retry"
    assert classify_capture(False, Capture([RefusedRecipients({"a@b": (452, b"full")})])).status == "retry"
