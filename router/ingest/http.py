"""HTTP endpoints of `router serve`: ingest, health, readiness and Prometheus metrics.

POST /events   one event or a JSON array of events -> 202 {"ids": [...]} once durably
               enqueued (RabbitMQ: confirmed publish; embedded: committed); 400 with the
               reason (and the index of the bad event); 401 when ``ingest.auth`` is set and the
               request does not carry the token or signature; 408 when the body is too slow;
               413 above the size limits; 503 with Retry-After when the transport cannot take
               them, the queue holds ``ingest.max_queued_events`` or too many bodies are being
               read (retrying is safe for events that carry their own id; one without an id
               gets a fresh one per request). A single event may also come in CloudEvents HTTP
               binary mode (``ce-*`` headers).
GET  /healthz  the process is up
GET  /readyz   the transport is connected and a configuration is loaded
GET  /metrics  Prometheus text format
(health, readiness and metrics are never authenticated: probes and scrapers reach them.)

Limits, in the order they apply: the request body (``ingest.max_body_bytes``, default four
events' worth, enforced while reading: a larger body is never buffered), then the number of
events (:data:`MAX_BATCH`; a larger array is refused whole), then each event's encoded size
(``broker.max_body_bytes``, the limit the engine applies to what it consumes). A request is
all or nothing: nothing is enqueued unless every event in it is valid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from router.core.errors import DecodeError
from router.core.events import Event, encode, event_from_object, parse_json
from router.ingest.admission import RETRY_AFTER, Backlog, ReadBudget
from router.ingest.auth import AuthError, IngestSettings, default_max_request
from router.ingest.connections import ConnectionGuard, guard_middleware
from router.support.metrics import Metrics
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


def parse_events(
    raw: bytes,
    *,
    max_event_bytes: int,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> list[Event]:
    """Decode a request body (one event object or an array of them) into validated events.

    ``headers`` (``ce-*`` attributes of CloudEvents binary mode) and ``content_type`` apply to
    a single event; an array is always a list of self-describing events. An event without an
    id gets a fresh unique one (returned in the 202): two genuine posts of the same content are
    two events. (A message consumed from RabbitMQ without an id keeps an id derived from its
    content instead, so that a redelivery is recognised: see router/core/events.py.)
    """
    try:
        payload = parse_json(raw, "body")
    except DecodeError as error:
        raise IngestError(400, str(error)) from None
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
        # The id of an event that names none is derived from ``body_for_id``: random bytes make
        # it a fresh unique id in the same format (32 hex digits). An array's event that names
        # its id needs none (a system call per event saved on the batch path).
        try:
            if single:
                fresh = secrets.token_bytes(16)
                event = event_from_object(item, body_for_id=fresh, headers=headers, content_type=content_type)
            else:
                event = event_from_object(item, body_for_id=None if _names_its_id(item) else secrets.token_bytes(16))
            events.append(event)
        except DecodeError as error:
            raise IngestError(400, f"{where}: {error}") from None
    return events


def _names_its_id(item: Any) -> bool:
    """Whether an array's event takes its id from its own ``id`` (CloudEvents, or a ``data``
    member beside it); an event that is all data gets a derived id whatever it holds."""
    return type(item) is dict and item.get("id") is not None and ("data" in item or "specversion" in item)


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length above the limit is refused before reading anything; a chunked
    body is counted as it arrives, so at most ``limit`` bytes (plus one chunk) are held. A body
    that has not arrived whole within ``timeout`` seconds is refused with 408.
    """
    too_large = IngestError(413, too_large_message(limit))
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise IngestError(408, f"the request body did not arrive within {timeout:g} s (ingest.body_timeout)") from None
    return bytes(body)


def build_app(
    *,
    transport: Transport,
    metrics: Metrics,
    is_ready: Callable[[], bool],
    max_event_bytes: int,
    ingest: Callable[[], IngestSettings] | None = None,
    guard: ConnectionGuard | None = None,
    more_metrics: Callable[[bytes], Awaitable[bytes]] | None = None,
) -> web.Application:
    """The aiohttp application serving the endpoints above.

    ``more_metrics`` turns this process's exposition into the one ``/metrics`` answers (with
    ``router serve --workers``: every process's, labelled by worker).

    ``ingest`` gives the authentication and request limits in force, asked per request so that
    a reload applies to the next one; without it requests are not authenticated. ``guard``
    (the connection cap and header deadline of :mod:`router.ingest.connections`) is told when
    a request is being handled.
    """
    fixed = IngestSettings(auth=None, max_request_bytes=default_max_request(max_event_bytes))
    current = ingest or (lambda: fixed)
    budget = ReadBudget(fixed.max_reading_bytes)
    backlog = Backlog(transport.queue_depth)

    async def expect_continue(request: web.Request) -> web.Response | None:
        # "Expect: 100-continue" (curl sends it for large bodies): refuse a bad token or a
        # declared length above the limit before the client sends the body at all.
        settings = current()
        try:
            _check_before_body(request, settings)
        except AuthError as error:
            return _unauthorized(error)
        except IngestError as error:
            return _error(error.status, error.message)
        if request.version >= (1, 1):
            if request.headers.get("Expect", "").lower() != "100-continue":
                return _error(417, "only 'Expect: 100-continue' is supported")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def ingest_events(request: web.Request) -> web.Response:
        settings = current()
        try:
            _check_before_body(request, settings)  # a bad token is refused before the body is read
        except AuthError as error:
            return _closing(_unauthorized(error))
        except IngestError as error:
            return _closing(_error(error.status, error.message))
        waiting = backlog.estimate()
        if waiting >= settings.max_queued_events:
            return _busy(
                f"{waiting} events are waiting in the queue (ingest.max_queued_events is "
                f"{settings.max_queued_events}); retry later"
            )
        # Reserved before a byte is read, and held until the events are enqueued: the body,
        # its parse and its encoding are what a request costs in memory.
        size = request.content_length if request.content_length is not None else settings.max_request_bytes
        budget.capacity = settings.max_reading_bytes
        if not budget.take(size):
            return _busy("too many request bodies are being read at once (ingest.max_reading_bytes); retry later")
        try:
            response = await handle(request, settings)
        finally:
            budget.give(size)
        if not request.content.is_eof():
            response.force_close()  # the rest of a refused body is not read: the connection closes
        return response

    async def handle(request: web.Request, settings: IngestSettings) -> web.Response:
        auth = settings.auth
        try:
            try:
                raw = await read_body(request, settings.max_request_bytes, settings.body_timeout)
            except IngestError:
                raise
            except Exception as error:  # the client went away mid-body (a short Content-Length)
                log.info("ingest request not read to its end: %s; nothing enqueued", type(error).__name__)
                return _error(400, "request body incomplete; nothing was enqueued")
            if auth is not None:
                auth.check_body(request.headers, raw)
            # lower(): aiohttp's header names are istr, which the decoder (wanting plain str) skips.
            binary = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("ce-")}
            events = parse_events(
                raw, max_event_bytes=max_event_bytes, headers=binary or None, content_type=request.content_type
            )
            bodies = [encode(event) for event in events]
        except AuthError as error:
            return _unauthorized(error)
        except IngestError as error:
            return _error(error.status, error.message)
        except RecursionError:
            return _error(400, "an event is nested too deeply to be encoded")
        except ValueError as error:  # data JSON cannot carry (encode() names the event)
            return _error(400, str(error))
        # Together: the embedded queue commits them in one transaction (one fsync, not one per
        # event), RabbitMQ gets them in one write and confirms them together. In order, so a
        # batch keeps its order in the queue.
        results = await transport.publish_events(
            [(body, event.type) for event, body in zip(events, bodies, strict=True)], content_type=CLOUDEVENTS
        )
        failures = [result for result in results if result is not None]
        if failures:
            enqueued = len(events) - len(failures)
            # TransportError messages are secret-free; other exceptions show only their type.
            first = failures[0]
            reason = str(first) if isinstance(first, TransportError) else type(first).__name__
            log.warning("ingest could not enqueue %d of %d events: %s", len(failures), len(events), reason)
            backlog.accepted(enqueued)
            refused = web.json_response(
                {
                    "error": f"could not enqueue {len(failures)} of {len(events)} events: {reason}; "
                    "retry the request (events that carry their own id are not delivered twice)",
                    "enqueued": enqueued,
                },
                status=503,
            )
            refused.headers["Retry-After"] = RETRY_AFTER
            return refused
        backlog.accepted(len(events))
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
        body = metrics.render()
        if more_metrics is not None:
            body = await more_metrics(body)
        response = web.Response(body=body)
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    # The body is read by read_body() under the limit in force; client_max_size bounds the
    # other handlers, which read none.
    app = web.Application(
        client_max_size=fixed.max_request_bytes, middlewares=[guard_middleware(guard)] if guard is not None else []
    )

    async def stop_backlog(_: web.Application) -> None:
        await backlog.close()

    app.on_cleanup.append(stop_backlog)
    app.router.add_post("/events", ingest_events, expect_handler=expect_continue)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _closing(response: web.Response) -> web.Response:
    """``response``, after which the connection closes (whatever of the body was sent is not read)."""
    response.force_close()
    return response


def _busy(message: str) -> web.Response:
    """503 with Retry-After, closing the connection without reading the body."""
    response = _error(503, message)
    response.headers["Retry-After"] = RETRY_AFTER
    return _closing(response)


def _unauthorized(error: AuthError) -> web.Response:
    response = _error(401, error.message)
    if error.challenge:
        response.headers["WWW-Authenticate"] = error.challenge
    return response


def _check_before_body(request: web.Request, settings: IngestSettings) -> None:
    """What can be refused from the headers alone: the token, a declared length above the limit."""
    if settings.auth is not None:
        settings.auth.check_headers(request.headers)
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise IngestError(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"request body above the limit of {limit} bytes (ingest.max_body_bytes)"


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
