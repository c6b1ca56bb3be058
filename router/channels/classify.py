"""Turn delivery failures into Outcomes: retryable (with a retry-after) or permanent.

Rules, shared by every channel:

- HTTP: 2xx sent; 408, 425, 429 and 5xx retryable (429 honours ``Retry-After`` in seconds
  or as an HTTP-date, else a JSON body's ``retry_after`` as Discord sends it); any other
  status permanent.
- Network: timeouts, refused or reset connections, DNS failures retryable; a TLS certificate
  that does not verify, an invalid URL or a redirect loop permanent.
- SMTP: authentication failures and 5xx replies permanent; 4xx replies, disconnects and
  network errors retryable.

Reasons are short (``HTTP 503 Service Unavailable``, ``timeout after 10s``, ``connection
refused``) and built from types and status codes, never from URLs or server text, so they
hold no secret.

What apprise's libraries saw is recorded by :mod:`router.channels.apprise.capture`, which
classifies it with these rules.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

# smtplib, ssl, socket, email.utils and http are imported by the functions that need them:
# this module is loaded by every command that loads the channels (`router check` among them).
from router.core.durations import format_duration
from router.core.message import Outcome

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx statuses worth retrying; every 5xx is retryable too."""

MAX_RETRY_AFTER = 86_400.0
"""Retry-After values are capped to a day: a larger one is a provider bug, not a plan."""

# --- HTTP statuses -------------------------------------------------------------------


def status_reason(status: int) -> str:
    """``HTTP 503 Service Unavailable``; the phrase comes from the standard, never from the server."""
    reason = _REASONS.get(status)
    if reason is None:
        from http import HTTPStatus

        try:
            reason = f"HTTP {status} {HTTPStatus(status).phrase}"
        except ValueError:
            reason = f"HTTP {status}"
        if 100 <= status < 600:  # bounded: a hostile server's odd statuses cannot grow the cache
            _REASONS[status] = reason
    return reason


_REASONS: dict[int, str] = {}  # status -> reason: one sent per delivery, built once


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _body_retry_after(body: bytes | str | None) -> float | None:
    """Discord (and others) put ``{"retry_after": 1.5}`` in the body of a 429, in seconds."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        value = data.get("retry_after")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    return None


def retry_after_from(headers: Mapping[str, str], body: bytes | str | None = None) -> float | None:
    """The wait a rate-limited response asks for: Retry-After, else the body's ``retry_after``,
    else Discord's ``X-RateLimit-Reset-After``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for candidate in (
        parse_retry_after(lowered.get("retry-after")),
        _body_retry_after(body),
        parse_retry_after(lowered.get("x-ratelimit-reset-after")),
    ):
        if candidate is not None:
            return candidate
    return None


def classify_status(status: int, headers: Mapping[str, str] | None = None, body: bytes | str | None = None) -> Outcome:
    """Classify an HTTP response status (2xx is sent)."""
    reason = status_reason(status)
    if 200 <= status < 300:
        return Outcome.sent(reason)
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        retry_after = retry_after_from(headers or {}, body) if status in (429, 503) else None
        return Outcome.retryable(reason, retry_after)
    return Outcome.permanent(reason)


# --- exceptions ----------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: causes, contexts, urllib3's ``reason``,
    aiohttp's ``os_error`` and exceptions passed as arguments (as requests does)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked: list[Any] = [current.__cause__, current.__context__]
        linked += [getattr(current, "reason", None), getattr(current, "os_error", None)]
        linked += list(current.args)
        stack.extend(item for item in linked if isinstance(item, BaseException))


def _is_timeout(exc: BaseException) -> bool:
    # urllib3's NewConnectionError subclasses its ConnectTimeoutError although it means
    # "could not connect"; callers test for refusals and DNS failures first.
    name = type(exc).__name__
    return isinstance(exc, TimeoutError) or name in {
        "Timeout",
        "ConnectTimeout",
        "ReadTimeout",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ServerTimeoutError",
    }


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    return value if isinstance(value, int) else None


def classify_exception(exc: BaseException, *, timeout: float | None = None) -> Outcome:
    """Classify a network-level exception from requests, urllib3, aiohttp, smtplib or the socket layer."""
    import smtplib
    import socket
    import ssl

    if isinstance(exc, smtplib.SMTPException):  # an OSError subclass whose errno is the SMTP code
        return classify_smtp_exception(exc, timeout=timeout)
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    if any(isinstance(e, ConnectionRefusedError) or _errno(e) == errno.ECONNREFUSED for e in chain):
        return Outcome.retryable("connection refused")
    if any(isinstance(e, socket.gaierror) for e in chain) or "ClientConnectorDNSError" in names:
        return Outcome.retryable("DNS lookup failed")
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or "ClientConnectorCertificateError" in names:
        return Outcome.permanent("TLS certificate verification failed")
    if names & {"InvalidURL", "MissingSchema", "InvalidSchema", "InvalidURLError", "LocationParseError"}:
        return Outcome.permanent("invalid URL")
    if names & {"TooManyRedirects", "TooManyRedirectsError"}:
        return Outcome.permanent("too many redirects")
    if any(_is_timeout(e) for e in chain):
        return Outcome.retryable(f"timeout after {format_duration(timeout)}" if timeout else "timeout")
    if any(isinstance(e, ConnectionResetError) or _errno(e) == errno.ECONNRESET for e in chain):
        return Outcome.retryable("connection reset")
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return Outcome.retryable("TLS error")
    if any(isinstance(e, OSError) for e in chain) or names & {"ConnectionError", "ClientError", "ClientPayloadError"}:
        return Outcome.retryable(f"connection error ({type(exc).__name__})")
    return Outcome.retryable(f"unexpected error ({type(exc).__name__})")


def _smtp_code_outcome(what: str, code: int) -> Outcome:
    reason = f"{what} ({code})"
    return Outcome.retryable(reason) if 400 <= code < 500 else Outcome.permanent(reason)


def classify_smtp_exception(exc: BaseException, *, timeout: float | None = None) -> Outcome:
    """Classify an smtplib exception: auth and 5xx permanent; 4xx, disconnects and network errors retryable."""
    import smtplib

    if isinstance(exc, smtplib.SMTPAuthenticationError):
        if 400 <= exc.smtp_code < 500:  # 454: temporary authentication failure
            return Outcome.retryable(f"SMTP authentication temporarily failed ({exc.smtp_code})")
        return Outcome.permanent(f"SMTP authentication failed ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return classify_refused_recipients(exc.recipients)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _smtp_code_outcome("SMTP sender refused", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPDataError):
        return _smtp_code_outcome("SMTP message refused", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPConnectError):
        return Outcome.retryable(f"SMTP connect failed ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _smtp_code_outcome("SMTP error", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Outcome.permanent("SMTP server does not support a required extension (STARTTLS or AUTH)")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Outcome.retryable("SMTP server disconnected")
    if isinstance(exc, smtplib.SMTPException):
        return Outcome.retryable(f"SMTP error ({type(exc).__name__})")
    return classify_exception(exc, timeout=timeout)


def classify_refused_recipients(recipients: Mapping[str, tuple[int, bytes]]) -> Outcome:
    """Recipients an SMTP server refused: retryable only when every refusal is temporary (4xx)."""
    codes = sorted({code for code, _ in recipients.values()})
    count = len(recipients)
    what = f"SMTP refused {count} recipient{'s' if count != 1 else ''}"
    reason = f"{what} ({', '.join(str(c) for c in codes)})"
    if codes and all(400 <= c < 500 for c in codes):
        return Outcome.retryable(reason)
    return Outcome.permanent(reason)
