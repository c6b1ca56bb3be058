"""What crosses the wire to and from RabbitMQ: header encoding, the broker's own headers, URLs and errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from yarl import URL

# Failures of the broker or of the connection to it (not of the caller's input).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)
# What a publish or connect may raise while the connection is down (aio-pika adds RuntimeError).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, RuntimeError)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe for logs and errors."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "<unparsable broker URL>"
    if parsed.password:
        parsed = parsed.with_password("***")
    return str(parsed.with_query(None))


def is_broker_header(name: str) -> bool:
    # Added by RabbitMQ when a delay queue dead-letters a record; not part of what was scheduled.
    return name == "x-death" or name.startswith(("x-first-death-", "x-last-death-"))


def wire_value(value: Any) -> Any:
    # The AMQP client encodes a Python float as a 32-bit float (an epoch timestamp would be
    # off by a minute); send floats as their exact decimal text instead.
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: wire_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire_value(v) for v in value]
    return value


def wire_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {k: wire_value(v) for k, v in (headers or {}).items()}


def received_headers(received: Mapping[str, Any] | None, *, strip_deaths: bool) -> dict[str, Any]:
    headers = dict(received or {})
    headers.pop("x-delivery-count", None)  # added by quorum queues on every delivery
    if strip_deaths:
        headers = {k: v for k, v in headers.items() if not is_broker_header(k)}
    return headers


def as_float(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
