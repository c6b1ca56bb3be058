"""`router publish`: send one event to RabbitMQ (confirmed) or to an embedded router over HTTP.

The RabbitMQ path is :class:`router.ingest.publisher.Publisher`, what applications use, with
``mandatory`` set: an event no queue is bound for (the router never started, or its bindings
do not cover the type) is an error, not a silent drop. Over HTTP the request carries the
token or signature that ``ingest.auth`` in rules.yaml requires.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

from router.config.models import BrokerConfig, IngestAuthSpec
from router.core.events import MAX_ID_LENGTH, Event, encode
from router.ingest.auth import client_headers
from router.ingest.publisher import Publisher, PublishError

__all__ = ["PublishError", "http_base_url", "new_event", "publish_event"]

CLOUDEVENTS = "application/cloudevents+json"
DEFAULT_HTTP = "http://127.0.0.1:8080"
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def new_event(
    event_type: str, data: dict[str, Any], *, source: str, id: str | None = None, subject: str | None = None
) -> Event:
    """The event `router publish` sends; ``id`` defaults to a new UUID (the same id publishes the same event)."""
    if not TYPE_PATTERN.match(event_type):
        raise PublishError(f"invalid event type {event_type!r}: use dotted names like planet.completed")
    for name, value in (("--id", id), ("--source", source), ("--subject", subject)):
        if value is None:
            continue
        if not value.strip():
            raise PublishError(f"{name} cannot be empty")
        if len(value) > MAX_ID_LENGTH or not value.isprintable():
            raise PublishError(f"{name} must be printable text of at most {MAX_ID_LENGTH} characters")
    return Event(
        type=event_type,
        id=id or uuid.uuid4().hex,
        source=source,
        time=datetime.now(UTC),
        data=data,
        subject=subject,
    )


async def publish_event(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str,
    broker: BrokerConfig,
    broker_url: str,
    http_url: str | None = None,
    ingest_auth: IngestAuthSpec | None = None,
    id: str | None = None,
    subject: str | None = None,
) -> str:
    """Publish and return the event id, once RabbitMQ confirmed it or the router answered 202.

    ``http_url`` is the embedded router's address: ``HOST:PORT`` as `router serve --http`
    takes it, or a URL. ``ingest_auth`` is the router's ``ingest.auth``, to authenticate with.
    """
    event = new_event(event_type, data, source=source, id=id, subject=subject)
    try:
        body = encode(event)
    except ValueError as error:  # NaN or Infinity in --data: not JSON, no consumer could read it
        raise PublishError(str(error)) from None
    if broker_url.startswith(("amqp://", "amqps://")):
        await _publish_amqp(event, body, broker.model_copy(update={"url": broker_url}))
    else:
        await _publish_http(body, http_base_url(http_url or DEFAULT_HTTP), ingest_auth)
    return event.id


def http_base_url(address: str) -> str:
    """``127.0.0.1:9000`` or ``:9000`` -> ``http://127.0.0.1:9000``; a URL is kept as it is."""
    if "://" in address:
        return address.rstrip("/")
    host, _, port = address.rpartition(":")
    if not _:
        host, port = address, "8080"
    return f"http://{host or '127.0.0.1'}:{port}"


async def _publish_amqp(event: Event, body: bytes, broker: BrokerConfig) -> None:
    publisher = Publisher(broker.url, exchange=broker.exchange, source=event.source, mandatory=True)
    try:
        await publisher.connect()
        await publisher.publish_encoded(event, body)
    except PublishError as error:  # its message is secret-free and says what went wrong
        reason = str(error)
        if "unroutable" in reason:
            reason += "; start `router serve` once to declare its queue, or check broker.bindings"
        raise PublishError(f"could not publish to the broker: {reason}") from None
    finally:
        await publisher.close()


async def _publish_http(body: bytes, base_url: str, auth: IngestAuthSpec | None = None) -> None:
    url = base_url.rstrip("/") + "/events"
    headers = {"Content-Type": CLOUDEVENTS, **client_headers(auth, body)}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            if response.status != 202:
                text = await response.text()
                try:
                    reason = json.loads(text).get("error", text)
                except (json.JSONDecodeError, AttributeError):
                    reason = text[:200]
                raise PublishError(f"router at {base_url} answered {response.status}: {reason}")
    except aiohttp.ClientConnectionError:
        raise PublishError(
            f"no router answers at {base_url}: start one with `router serve`, or configure a broker"
        ) from None
    except TimeoutError:
        raise PublishError(f"the router at {base_url} did not answer within 30 s") from None
