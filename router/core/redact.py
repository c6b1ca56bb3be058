"""Keep secrets (webhook tokens, passwords, header values) out of logs, errors and output.

Three tools, from most to least structural:

- :func:`redact_url` reduces a URL to what is safe to show: scheme and host.
- :func:`scrub` removes known secret strings (and every URL) from free text.
- :class:`SecretFilter` applies :func:`scrub` to log records, using the secrets that channels
  registered with :func:`register_secrets`. :func:`install_log_filter` puts it on the loggers of
  the libraries that log request URLs (apprise, urllib3, requests, aiohttp).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"

MIN_SECRET_LENGTH = 4
"""Shorter strings are not scrubbed from free text: they would blank out ordinary words."""

# Schemes whose host part is a real host name, safe to show. For others (discord://ID/TOKEN,
# tgram://BOT_TOKEN/...) apprise puts credentials where the host would be, so the host is hidden.
_HOST_SCHEMES = frozenset(
    {
        "http",
        "https",
        "ws",
        "wss",
        "mailto",
        "mailtos",
        "smtp",
        "smtps",
        "amqp",
        "amqps",
        "redis",
        "rediss",
        "postgres",
        "postgresql",
        "sqlite",
    }
)

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s'\"<>()\[\]{},]+")


def redact_url(url: str) -> str:
    """Show ``url`` as ``scheme://host[:port]``: no userinfo, path, query or fragment.

    Hosts of schemes that are not host-based (``discord://ID/TOKEN``) are masked too.
    """
    text = url.strip()
    match = _SCHEME.match(text)
    if not match:
        return "<url>"
    scheme = match.group(1).lower()
    if scheme not in _HOST_SCHEMES:
        return f"{scheme}://{MASK}"
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://{MASK}"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def secret_variants(secret: str) -> set[str]:
    """``secret`` plus the encoded forms it takes inside URLs and logs."""
    variants = {secret, quote(secret, safe=""), quote(secret, safe="/"), unquote(secret)}
    return {v for v in variants if len(v) >= MIN_SECRET_LENGTH}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every ``secrets`` string (and its URL-encoded forms) and every URL's sensitive parts from ``text``."""
    variants: set[str] = set()
    for secret in secrets:
        if secret:
            variants |= secret_variants(secret)
    # Longest first, so a secret that contains another is masked whole.
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class _SecretStore:
    """The process-wide set of secrets that log records are scrubbed of."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)

    def add(self, values: Iterable[str | None]) -> None:
        new: set[str] = set()
        for value in values:
            if value:
                new |= secret_variants(value)
        if not new:
            return
        with self._lock:
            self._secrets = self._secrets | new

    def snapshot(self) -> frozenset[str]:
        return self._secrets  # replaced atomically, never mutated

    def pattern(self) -> re.Pattern[str] | None:
        """One regex finding any registered secret (a quick test before replacing), rebuilt when they change."""
        secrets = self._secrets
        built_for, pattern = self._pattern
        if built_for is not secrets:
            ordered = sorted(secrets, key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
            self._pattern = (secrets, pattern)
        return pattern


_STORE = _SecretStore()


def register_secrets(*values: str | None) -> None:
    """Remember secrets so that :class:`SecretFilter` scrubs them from every log record.

    Channels call this when they are built; values shorter than ``MIN_SECRET_LENGTH`` are ignored.
    """
    _STORE.add(values)


def registered_secrets() -> frozenset[str]:
    """Every secret registered so far (with its encoded variants)."""
    return _STORE.snapshot()


class Content(str):
    """Rendered message text put in a log field (dry run): links in it are the message's own.

    Registered secrets are still masked, but URLs are left whole: a developer previewing a
    notification needs to see the profile link it carries, and a template cannot read a channel's
    URL or the environment, only the event.
    """

    __slots__ = ()


def _scrub_registered(text: str) -> str:
    """:func:`scrub` with the registered secrets; cheap when there is nothing to remove."""
    is_content = isinstance(text, Content)  # str.replace below returns a plain str
    pattern = _STORE.pattern()
    if pattern is not None and pattern.search(text) is not None:
        # Longest first, one after the other: a secret overlapping another is masked whole.
        for secret in sorted(_STORE.snapshot(), key=len, reverse=True):
            text = text.replace(secret, MASK)
    if is_content:
        return text
    if _URL_IN_TEXT.search(text) is not None:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return text


def _scrub_field(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_registered(value)
    if depth > 4:  # fields are flat in practice; deeper containers are left as they are
        return value
    if isinstance(value, (list, tuple)):
        return [_scrub_field(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_field(item, depth + 1) for key, item in value.items()}
    return value


class SecretFilter(logging.Filter):
    """A logging filter that rewrites each record with registered secrets and URLs scrubbed.

    The message, a formatted traceback and the structured ``fields`` (``extra={"fields":
    {...}}``, which the formatters print) are all scrubbed. Attach it to a logger (records
    created by that logger) or to a handler (every record the handler emits, whatever logger
    created it).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _STORE.snapshot()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            # Fields carry reasons and errors built from exceptions and responses: the same
            # text as a message, so the same scrubbing.
            record.fields = {key: _scrub_field(value) for key, value in fields.items()}
        try:
            message = record.getMessage()
        except Exception:  # a broken format string; leave it to the handler to report
            return True
        cleaned = _scrub_registered(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text may quote URLs with tokens: format it now, scrubbed.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(formatted, secrets)
            record.exc_info = None
        return True


DEFAULT_LOGGERS: tuple[str, ...] = (
    "apprise",
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "aiohttp.client",
    "aiohttp.internal",
)
"""Loggers that :func:`install_log_filter` covers by default.

A logger's filters only see records created by that very logger, not by its children, so
urllib3's modules are listed one by one.
"""

_install_lock = threading.Lock()


def install_log_filter(names: Iterable[str] = DEFAULT_LOGGERS) -> None:
    """Attach one :class:`SecretFilter` to each named logger (idempotent)."""
    with _install_lock:
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, SecretFilter) for f in logger.filters):
                logger.addFilter(SecretFilter())
