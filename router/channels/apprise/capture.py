"""The adapter to the blocking I/O libraries under apprise: what ``requests`` and ``smtplib`` saw.

Apprise only tells whether a send worked, so :func:`capture` records what the libraries
underneath it saw: a wrapper installed once on ``requests``' ``HTTPAdapter.send`` and on
``smtplib.SMTP``'s network methods records each response or exception for the current context
(the call then proceeds unchanged), and :func:`classify_capture` classifies the recording with
the shared rules of :mod:`router.channels.classify`.

This is the one module that patches another library's methods; tests/test_library_contracts.py
fails loudly if an upgrade of requests or smtplib changes what it relies on.
"""

from __future__ import annotations

import contextvars
import functools
import smtplib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from router.channels.classify import (
    classify_refused_recipients,
    classify_smtp_exception,
    classify_status,
)
from router.core.message import Outcome

_BODY_LIMIT = 65_536  # of a 429/503 body, read for a JSON retry_after


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """One HTTP response as a library under apprise received it."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes | None = None  # kept for rate-limited responses only


@dataclass(frozen=True, slots=True)
class RefusedRecipients:
    """An SMTP ``sendmail`` that returned refused recipients instead of raising."""

    recipients: Mapping[str, tuple[int, bytes]]


Event = HttpExchange | RefusedRecipients | BaseException


@dataclass
class Capture:
    """What the I/O libraries saw during one apprise call, in order."""

    events: list[Event] = field(default_factory=list)

    def record(self, event: Event) -> None:
        if self.events and self.events[-1] is event:
            return  # the same exception seen by nested wrappers
        self.events.append(event)


_current: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("router_io_capture", default=None)


@contextmanager
def capture() -> Iterator[Capture]:
    """Record the HTTP and SMTP traffic of the current context (thread or task) while inside."""
    install_requests_capture()
    install_smtp_capture()
    recorder = Capture()
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


def classify_capture(ok: bool, recorded: Capture, *, timeout: float | None = None) -> Outcome:
    """Classify an apprise call from its boolean result and what :func:`capture` recorded.

    The last failure recorded decides. A failure with nothing recorded (apprise refused the
    message itself, or a non-HTTP protocol failed) is retryable: retries are bounded, a lost
    message is not.
    """
    if ok:
        return Outcome.sent()
    failures: list[Outcome] = []
    saw_success = False
    for event in recorded.events:
        if isinstance(event, HttpExchange):
            outcome = classify_status(event.status, event.headers, event.body)
            if outcome.ok:
                saw_success = True
                continue
            failures.append(outcome)
        elif isinstance(event, RefusedRecipients):
            failures.append(classify_refused_recipients(event.recipients))
        else:
            failures.append(classify_smtp_exception(event, timeout=timeout))
    if failures:
        return failures[-1]
    if saw_success:
        return Outcome.permanent("provider rejected the message (unexpected response to a 2xx request)")
    return Outcome.retryable("delivery failed without a network error (see the apprise log)")


_install_lock = threading.Lock()


def _wrapped(original: Callable[..., Any], marker: str) -> bool:
    return bool(getattr(original, marker, False))


def install_requests_capture() -> None:
    """Wrap ``requests.adapters.HTTPAdapter.send`` once so :func:`capture` sees every response."""
    from requests.adapters import HTTPAdapter

    with _install_lock:
        original = HTTPAdapter.send
        if _wrapped(original, "_router_capture"):
            return

        @functools.wraps(original)
        def send(self: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
            recorder = _current.get()
            if recorder is None:
                return original(self, request, *args, **kwargs)
            try:
                response = original(self, request, *args, **kwargs)
            except BaseException as exc:
                recorder.record(exc)
                raise
            body: bytes | None = None
            if response.status_code in (429, 503) and not kwargs.get("stream", False):
                # Reading here is what requests does next anyway; the content stays cached.
                try:
                    body = response.content[:_BODY_LIMIT]
                except Exception:
                    body = None
            headers = {k.lower(): v for k, v in response.headers.items()}
            recorder.record(HttpExchange(response.status_code, headers, body))
            return response

        send._router_capture = True  # type: ignore[attr-defined]
        HTTPAdapter.send = send  # type: ignore[method-assign]


def install_smtp_capture() -> None:
    """Wrap ``smtplib.SMTP``'s network methods once so :func:`capture` sees SMTP failures."""
    with _install_lock:
        for name in ("__init__", "connect", "starttls", "login", "sendmail"):
            original = getattr(smtplib.SMTP, name)
            if _wrapped(original, "_router_capture"):
                continue
            setattr(smtplib.SMTP, name, _smtp_wrapper(original, name))


def _smtp_wrapper(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def method(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        recorder = _current.get()
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            if recorder is not None:
                recorder.record(exc)
            raise
        if recorder is not None and name == "sendmail" and result:
            recorder.record(RefusedRecipients(dict(result)))
        return result

    method._router_capture = True  # type: ignore[attr-defined]
    return method
