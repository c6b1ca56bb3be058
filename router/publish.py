"""`router publish`: send one event to RabbitMQ (confirmed) or to an embedded router over HTTP."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

from router.config.models import BrokerConfig
from router.events import Event, encode

CLOUDEVENTS = "application/cloudevents+json"
DEFAULT_HTTP = "http://127.0.0.1:8080"
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class PublishError(Exception):
    """The event could not be published; the message says why (never with credentials)."""


def new_event(event_type: str, data: dict[str, Any], *, source: str) -> Event:
    if not TYPE_PATTERN.match(event_type):
        raise PublishError(f"invalid event type {event_type!r}: use dotted names like planet.completed")
    return Event(type=event_type, id=uuid.uuid4().hex, source=source, time=datetime.now(UTC), data=data)


async def publish_event(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str,
    broker: BrokerConfig,
    broker_url: str,
    http_url: str | None = None,
) -> str:
    """Publish and return the event id, once RabbitMQ confirmed it or the router answered 202.

    ``http_url`` is the embedded router's address: ``HOST:PORT`` as `router serve --http`
    takes it, or a URL.
    """
    event = new_event(event_type, data, source=source)
    try:
        body = encode(event)
    except ValueError as error:  # NaN or Infinity in --data: not JSON, no consumer could read it
        raise PublishError(str(error)) from None
    if broker_url.startswith(("amqp://", "amqps://")):
        await _publish_amqp(event, body, broker.model_copy(update={"url": broker_url}))
    else:
        await _publish_http(body, http_base_url(http_url or DEFAULT_HTTP))
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
    from router.transports import TransportError, open_transport

    transport = open_transport(broker)
    try:
        await transport.connect()
        await transport.publish_event(body, routing_key=event.type, content_type=CLOUDEVENTS)
    except TransportError as error:  # its message is secret-free and says what went wrong
        raise PublishError(f"could not publish to the broker: {error}") from None
    except Exception as error:
        raise PublishError(f"could not publish to the broker: {type(error).__name__}") from None
    finally:
        with contextlib.suppress(Exception):  # closing a failed connection may fail too
            await transport.close()


async def _publish_http(body: bytes, base_url: str) -> None:
    url = base_url.rstrip("/") + "/events"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, data=body, headers={"Content-Type": CLOUDEVENTS}) as response,
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
