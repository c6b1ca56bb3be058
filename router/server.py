"""HTTP endpoints of `router serve`: ingest, health, readiness and Prometheus metrics.

POST /events   one event or a JSON array of events -> 202 {"ids": [...]} once durably
               enqueued (RabbitMQ: confirmed publish; embedded: committed); 400 with the
               reason (and the index of the bad event); 413 above the size limit
GET  /healthz  the process is up
GET  /readyz   the transport is connected and a configuration is loaded
GET  /metrics  Prometheus text format
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.errors import DecodeError
from router.events import Event, encode, event_from_object
from router.metrics import Metrics
from router.transports.base import Transport

log = logging.getLogger("router.http")

MAX_BATCH = 1000
CLOUDEVENTS = "application/cloudevents+json"


class IngestError(Exception):
    """A request the ingest endpoint refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_events(raw: bytes, *, max_event_bytes: int) -> list[Event]:
    """Decode a request body (one event object or an array of them) into validated events."""
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise IngestError(400, "body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise IngestError(
            400, f"body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise IngestError(400, "empty array: nothing to enqueue")
    if len(items) > MAX_BATCH:
        raise IngestError(413, f"at most {MAX_BATCH} events per request, got {len(items)}")
    events = []
    single = not isinstance(payload, list)
    for position, item in enumerate(items):
        where = "event" if single else f"event [{position}]"
        item_bytes = raw if single else json.dumps(item, separators=(",", ":")).encode()
        if len(item_bytes) > max_event_bytes:
            raise IngestError(413, f"{where} is {len(item_bytes)} bytes, above the limit of {max_event_bytes}")
        try:
            events.append(event_from_object(item, body_for_id=item_bytes))
        except DecodeError as error:
            raise IngestError(400, f"{where}: {error}") from None
    return events


def build_app(
    *,
    transport: Transport,
    metrics: Metrics,
    is_ready: Callable[[], bool],
    max_event_bytes: int,
) -> web.Application:
    """The aiohttp application serving the endpoints above."""
    max_request = max_event_bytes * 4 + 1024  # arrays carry several events; each is checked alone

    async def ingest(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_request:
            return _error(413, f"request body above the limit of {max_request} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body above the limit of {max_request} bytes")
        try:
            events = parse_events(raw, max_event_bytes=max_event_bytes)
        except IngestError as error:
            return _error(error.status, error.message)
        for event in events:
            await transport.publish_event(encode(event), routing_key=event.type, content_type=CLOUDEVENTS)
        return web.json_response({"ids": [event.id for event in events]}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = is_ready() and transport.connected
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics_endpoint(_: web.Request) -> web.Response:
        depth = await transport.queue_depth()
        if depth is not None:
            metrics.queue_depth.set(depth)
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application(client_max_size=max_request)
    app.router.add_post("/events", ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def parse_host_port(value: str, default_port: int = 8080) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ("127.0.0.1", 8080); ``":9000"`` -> ("127.0.0.1", 9000)."""
    host, _, port = value.rpartition(":")
    if not _:
        return value or "127.0.0.1", default_port
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT, got {value!r}") from None
    return host or "127.0.0.1", number
