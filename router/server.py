"""HTTP endpoints of `router serve`: ingest, health, readiness and Prometheus metrics.

POST /events   one event or a JSON array of events -> 202 {"ids": [...]} once durably
               enqueued (RabbitMQ: confirmed publish; embedded: committed); 400 with the
               reason (and the index of the bad event); 413 above the size limit; 503 when
               the transport cannot take them (retrying is safe: ids are stable). A single
               event may also come in CloudEvents HTTP binary mode (``ce-*`` headers).
GET  /healthz  the process is up
GET  /readyz   the transport is connected and a configuration is loaded
GET  /metrics  Prometheus text format
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from router.errors import DecodeError
from router.events import Event, encode, event_from_object
from router.metrics import Metrics
from router.transports.base import Transport, TransportError

log = logging.getLogger("router.http")

MAX_BATCH = 1000
CLOUDEVENTS = "application/cloudevents+json"
# The classic text format, which generate_latest() writes. prometheus_client's
# CONTENT_TYPE_LATEST names format 1.0.0 in recent releases, which this body is not.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class IngestError(Exception):
    """A request the ingest endpoint refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _reject_constant(name: str) -> object:
    # json.loads accepts NaN and Infinity, which are not JSON and which no event can carry on.
    raise ValueError(f"{name} is not valid JSON")


def parse_events(
    raw: bytes,
    *,
    max_event_bytes: int,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> list[Event]:
    """Decode a request body (one event object or an array of them) into validated events.

    ``headers`` (``ce-*`` attributes of CloudEvents binary mode) and ``content_type`` apply to
    a single event; an array is always a list of self-describing events.
    """
    try:
        payload = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise IngestError(400, "body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise IngestError(
            400, f"body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except ValueError as error:
        raise IngestError(400, f"body is not valid JSON: {error}") from None
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
            if single:
                event = event_from_object(item, body_for_id=item_bytes, headers=headers, content_type=content_type)
            else:
                event = event_from_object(item, body_for_id=item_bytes)
            events.append(event)
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
        # lower(): aiohttp's header names are istr, which the decoder (wanting plain str) skips.
        binary = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("ce-")}
        try:
            events = parse_events(
                raw, max_event_bytes=max_event_bytes, headers=binary or None, content_type=request.content_type
            )
            bodies = [encode(event) for event in events]
        except IngestError as error:
            return _error(error.status, error.message)
        except ValueError as error:  # data JSON cannot carry (encode() names the event)
            return _error(400, str(error))
        # Concurrently: the embedded queue commits them together (one fsync, not one per
        # event) and RabbitMQ confirms them together. Publishes start in order, so a batch
        # keeps its order in the queue.
        results = await asyncio.gather(
            *(
                transport.publish_event(body, routing_key=event.type, content_type=CLOUDEVENTS)
                for event, body in zip(events, bodies, strict=True)
            ),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            enqueued = len(events) - len(failures)
            # TransportError messages are secret-free; other exceptions show only their type.
            first = failures[0]
            reason = str(first) if isinstance(first, TransportError) else type(first).__name__
            log.warning("ingest could not enqueue %d of %d events: %s", len(failures), len(events), reason)
            return web.json_response(
                {
                    "error": f"could not enqueue {len(failures)} of {len(events)} events: {reason}; "
                    "retry the request (event ids are stable, nothing is delivered twice)",
                    "enqueued": enqueued,
                },
                status=503,
            )
        return web.json_response({"ids": [event.id for event in events]}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = is_ready() and transport.connected
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics_endpoint(_: web.Request) -> web.Response:
        try:
            depth = await transport.queue_depth()
        except Exception:  # the metrics must render even when the queue cannot be asked
            depth = None
        if depth is not None:
            metrics.queue_depth.set(depth)
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
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
