"""The Event envelope and the decoders that turn wire messages into events.

Accepted formats, tried in this order:

1. CloudEvents 1.0 structured mode: content type ``application/cloudevents+json``, or any
   JSON object carrying ``specversion``. The event's ``data`` must be a JSON object (or
   ``data_base64`` holding one); absent or null data is ``{}``. Extension attributes are
   ignored.
2. CloudEvents 1.0 binary mode: attributes in headers prefixed ``ce-`` (HTTP),
   ``cloudEvents_`` or ``cloudEvents:`` (AMQP), matched case-insensitively and recognised by
   a ``specversion`` attribute; the body is the data (empty body = ``{}``). ``ce-`` values are
   percent-decoded as the HTTP binding requires.
3. Inngest style: an object with a string ``name``, a ``data`` key and no ``type``;
   ``ts`` is milliseconds since the epoch.
4. Plain JSON object. The type is its ``type`` field, else the routing key. If the object
   has a ``data`` object it is an envelope: ``id``, ``source``, ``time`` and ``subject`` come
   from the top level and other top-level keys are ignored. Otherwise everything but ``type``
   is the data, and envelope fields are all defaulted (a field named ``id`` is the domain's
   own, not the event's).

Defaults: a missing ``id`` is derived from a hash of the event type and the body, so a
redelivered message keeps its id and stays idempotent (HTTP ingest passes random bytes as the
body to hash instead: an event posted without an id gets a fresh one); a missing ``time`` is the time the
message was received (UTC); a missing ``source`` is :data:`DEFAULT_SOURCE` (``"unknown"``).
Times are normalised to UTC; a timestamp without an offset is taken as UTC.

Anything else raises :class:`router.core.errors.DecodeError` whose message says what is wrong
without quoting the body. That includes JSON that Python would read but that no event can carry
on: ``NaN``/``Infinity``, numbers out of range (``1e999``, integers of more than 4,300 digits),
duplicate keys in an object (parsers disagree on which one wins), lone UTF-16 surrogate escapes
(``"\\ud800"``: nothing downstream can encode them) and nesting too deep to parse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final
from urllib.parse import unquote

from router.core.errors import DecodeError
from router.core.kinds import kind_of


@dataclass(slots=True)
class Event:
    """A domain event, whatever format it arrived in."""

    type: str
    id: str
    source: str
    time: datetime
    data: dict[str, Any]
    subject: str | None = None
    routing_key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    # The key, worked out once: it is asked for by every stage of every delivery and by the
    # activity history, and its JSON encoding was a third of the history's cost per event.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        """What makes this event unique: its ``source`` and ``id`` together, as CloudEvents defines it.

        Every idempotency key (a delivery's, a job's, a dedupe claim) is built from this, so a
        client posting another source's id cannot make that source's event look already sent.
        An event without a source keeps its bare id, the key of versions before (a ledger
        written by them still recognises it); a bare id never starts with ``["``, which every
        other key does (JSON of ``[source, id]``), so the two forms cannot collide.
        """
        key = self._key
        if key is None:
            if self.source == DEFAULT_SOURCE and not self.id.startswith('["'):
                key = self.id
            else:
                key = json.dumps([self.source, self.id], ensure_ascii=False, separators=(",", ":"))
            self._key = key
        return key

    def as_dict(self) -> dict[str, Any]:
        """The event as plain data: what `when` paths and templates address (``data.user.id``, ``type``)."""
        return {
            "type": self.type,
            "id": self.id,
            "source": self.source,
            "time": self.time,
            "subject": self.subject,
            "data": self.data,
            "routing_key": self.routing_key,
            "headers": self.headers,
        }


CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json"
"""Content type of a CloudEvents structured-mode message (what :func:`encode` produces)."""

DEFAULT_SOURCE: Final = "unknown"
"""The ``source`` of an event whose message names none."""

BINARY_PREFIXES: Final = ("ce-", "cloudevents_", "cloudevents:")
"""Header prefixes of CloudEvents binary-mode attributes (compared lower-cased)."""

MAX_TYPE_LENGTH: Final = 255  # an AMQP routing key holds at most 255 bytes
MAX_ID_LENGTH: Final = 512

# A segment is anything but whitespace, control characters, '.', and the pattern characters
# (and lone surrogates, which no routing key can encode).
_TYPE_RE = re.compile(r"[^\s.*#\x00-\x1f\x7f\ud800-\udfff]+(?:\.[^\s.*#\x00-\x1f\x7f\ud800-\udfff]+)*")


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"body is not JSON: {name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; a message whose 'type' means one thing to the
    # publisher and another to the router must not be routed on a guess.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DecodeError(f"body has a duplicate key {_short(key)} in an object")
            seen.add(key)
    return obj


# One decoder for all calls: building a JSONDecoder per message would cost more than parsing.
class _InfiniteNumber(Exception):
    """A JSON number that reads as infinity (not a ValueError: that means an oversized integer)."""


def _finite_float(text: str) -> float:
    # Called by the scanner for numbers with a fraction or an exponent only (integers cannot
    # overflow to infinity): 1e999, and 1 followed by 400 zeros then ".0", both read as inf.
    value = float(text)
    if value == _INF or value == -_INF:
        raise _InfiniteNumber
    return value


_INF = float("inf")
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys)

# A \uD800-\uDFFF escape: the only way a JSON text yields a string UTF-8 cannot encode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode(
    body: bytes | bytearray | memoryview,
    *,
    content_type: str | None = None,
    headers: Mapping[str, Any] | None = None,
    routing_key: str | None = None,
    received_at: datetime | None = None,
) -> Event:
    """Decode a message body (and its transport metadata) into an :class:`Event`.

    Raises :class:`DecodeError` when the message is not an event in any accepted format.
    """
    if type(body) is not bytes:
        if not isinstance(body, (bytearray, memoryview)):
            raise TypeError(f"decode() takes the message body as bytes, not {type(body).__name__}")
        body = bytes(body)
    structured = _structured_content_type(content_type)
    if not structured and headers:
        attributes = _binary_attributes(headers)
        if attributes is not None:
            data = _parse_data_body(body)
            return _from_binary(attributes, data, body, headers, routing_key, received_at)
    obj = parse_json(body, "body")
    if type(obj) is not dict:
        raise DecodeError(f"body is {_kind(obj)}, not a JSON object")
    return _from_object(obj, structured, headers, routing_key, received_at, lambda: body, owned=True)


def event_from_object(
    obj: Any,
    *,
    routing_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    body_for_id: bytes | None = None,
    content_type: str | None = None,
) -> Event:
    """Build an :class:`Event` from already-parsed JSON (HTTP ingest, ``router test EVENT.json``).

    Accepts the same formats as :func:`decode`. ``body_for_id`` is the raw body a derived id is
    hashed from; without it the id is hashed from a canonical serialisation of ``obj``.
    ``obj`` is never modified.
    """
    structured = _structured_content_type(content_type)
    if not structured and headers:
        attributes = _binary_attributes(headers)
        if attributes is not None:
            if obj is None:
                obj = {}
            if type(obj) is not dict:
                raise DecodeError(f"data is {_kind(obj)}, not a JSON object")
            return _from_binary(
                attributes, dict(obj), body_for_id or _canonical(obj), headers, routing_key, received_at
            )
    if not isinstance(obj, dict):
        raise DecodeError(f"event is {_kind(obj)}, not a JSON object")

    def id_basis() -> bytes:
        return body_for_id if body_for_id is not None else _canonical(obj)

    return _from_object(obj, structured, headers, routing_key, received_at, id_basis, owned=False)


def encode(event: Event) -> bytes:
    """Encode ``event`` as a CloudEvents 1.0 structured-mode JSON document.

    ``decode(encode(e)) == e`` for an event whose data is plain JSON, whose time is
    timezone-aware, and whose transport metadata (``routing_key``, ``headers``) is empty;
    metadata travels beside the body, so pass it to :func:`decode` to restore it.
    Raises ValueError when the data holds something JSON cannot represent.
    """
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": _format_time(event.time),
        "datacontenttype": "application/json",
    }
    if event.subject is not None:
        document["subject"] = event.subject
    document["data"] = event.data
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {event.id} cannot be encoded as JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from an event built in code (or parsed by a laxer reader): escaped,
        # it is still JSON that decodes back to the same strings.
        return json.dumps(document, separators=(",", ":"), default=_json_default).encode("ascii")


# -- formats ---------------------------------------------------------------------------------


def _from_object(
    obj: dict[str, Any],
    structured: bool,
    headers: Mapping[str, Any] | None,
    routing_key: str | None,
    received_at: datetime | None,
    id_basis: Callable[[], bytes],
    *,
    owned: bool,
) -> Event:
    if structured or "specversion" in obj:
        return _from_structured(obj, headers, routing_key, received_at, id_basis)
    if "type" not in obj and type(obj.get("name")) is str and "data" in obj:
        return _from_inngest(obj, headers, routing_key, received_at, id_basis)
    return _from_plain(obj, headers, routing_key, received_at, id_basis, owned=owned)


def _from_structured(
    obj: dict[str, Any],
    headers: Mapping[str, Any] | None,
    routing_key: str | None,
    received_at: datetime | None,
    id_basis: Callable[[], bytes],
) -> Event:
    if obj.get("specversion") is None:
        raise DecodeError("CloudEvents event has no 'specversion'")
    if "data_base64" in obj and obj.get("data") is None:
        return _cloudevent(
            obj, "", lambda: _base64_data(obj["data_base64"]), headers, routing_key, received_at, id_basis
        )
    return _cloudevent(obj, "", lambda: _data(obj.get("data"), "data"), headers, routing_key, received_at, id_basis)


def _from_binary(
    attributes: dict[str, Any],
    data: dict[str, Any],
    body: bytes,
    headers: Mapping[str, Any],
    routing_key: str | None,
    received_at: datetime | None,
) -> Event:
    def id_basis() -> bytes:
        # The attributes are part of the event in binary mode: two messages with the same data
        # but different subjects are different events.
        described = sorted((k, str(v)) for k, v in attributes.items() if k != "id")
        return json.dumps(described, ensure_ascii=False).encode("utf-8") + b"\0" + body

    return _cloudevent(attributes, " header", lambda: data, headers, routing_key, received_at, id_basis)


def _cloudevent(
    attributes: Mapping[str, Any],
    where: str,
    data: Callable[[], dict[str, Any]],
    headers: Mapping[str, Any] | None,
    routing_key: str | None,
    received_at: datetime | None,
    id_basis: Callable[[], bytes],
) -> Event:
    """The one constructor of a CloudEvents event, structured (``where=""``) or binary (``" header"``)."""
    version = attributes["specversion"]
    if version != "1.0":
        raise DecodeError(
            f"unsupported CloudEvents specversion {_short(version)}{where and ' in headers'} (only '1.0' is accepted)"
        )
    event_type = _event_type(attributes.get("type"), f"type{where}", routing_key)
    payload = data()  # before the other attributes, so a bad event names the same problem first
    return Event(
        type=event_type,
        id=_event_id(attributes.get("id"), f"id{where}", event_type, id_basis),
        source=_source(attributes.get("source"), f"source{where}"),
        time=_time(attributes.get("time"), f"time{where}", received_at),
        data=payload,
        subject=_subject(attributes.get("subject"), f"subject{where}"),
        routing_key=routing_key,
        headers=_copy_headers(headers),
    )


def _from_inngest(
    obj: dict[str, Any],
    headers: Mapping[str, Any] | None,
    routing_key: str | None,
    received_at: datetime | None,
    id_basis: Callable[[], bytes],
) -> Event:
    event_type = _event_type(obj["name"], "name", None)
    ts = obj.get("ts")
    return Event(
        type=event_type,
        id=_event_id(obj.get("id"), "id", event_type, id_basis),
        source=DEFAULT_SOURCE,
        time=_default_time(received_at) if ts is None else _epoch_ms(ts),
        data=_data(obj["data"], "data"),
        routing_key=routing_key,
        headers=_copy_headers(headers),
    )


def _from_plain(
    obj: dict[str, Any],
    headers: Mapping[str, Any] | None,
    routing_key: str | None,
    received_at: datetime | None,
    id_basis: Callable[[], bytes],
    *,
    owned: bool,
) -> Event:
    event_type = _event_type(obj.get("type"), "type", routing_key)
    if "data" in obj:
        return Event(
            type=event_type,
            id=_event_id(obj.get("id"), "id", event_type, id_basis),
            source=_source(obj.get("source"), "source"),
            time=_time(obj.get("time"), "time", received_at),
            data=_data(obj["data"], "data"),
            subject=_subject(obj.get("subject"), "subject"),
            routing_key=routing_key,
            headers=_copy_headers(headers),
        )
    if owned:
        data = obj  # parsed by us: reuse the dict instead of copying it
        data.pop("type", None)
    else:
        data = {k: v for k, v in obj.items() if k != "type"}
    return Event(
        type=event_type,
        id=_derive_id(event_type, id_basis()),
        source=DEFAULT_SOURCE,
        time=_default_time(received_at),
        data=data,
        routing_key=routing_key,
        headers=_copy_headers(headers),
    )


# -- fields ----------------------------------------------------------------------------------


def _event_type(value: Any, where: str, routing_key: str | None) -> str:
    text: str
    if value is None:
        if not routing_key:
            raise DecodeError(f"no event type: the message has no '{where}' and no routing key")
        text, where = routing_key, "routing key"
    elif isinstance(value, str):
        text = value
    else:
        raise DecodeError(f"'{where}' must be a string, got {_kind(value)}")
    if len(text) > MAX_TYPE_LENGTH:
        raise DecodeError(f"event type in '{where}' is longer than {MAX_TYPE_LENGTH} characters")
    if _TYPE_RE.fullmatch(text) is None:
        raise DecodeError(
            f"event type {_short(text)} in '{where}' is not a dotted name "
            "(non-empty segments separated by '.', without whitespace, '*' or '#')"
        )
    return text


def _event_id(value: Any, where: str, event_type: str, id_basis: Callable[[], bytes]) -> str:
    text: str
    if value is None:
        return _derive_id(event_type, id_basis())
    if isinstance(value, str):
        text = value
    elif type(value) is int:  # integer ids are common outside CloudEvents; bool is not an id
        text = str(value)
    else:
        raise DecodeError(f"'{where}' must be a string, got {_kind(value)}")
    if not text:
        raise DecodeError(f"'{where}' is empty")
    if len(text) > MAX_ID_LENGTH:
        raise DecodeError(f"'{where}' is longer than {MAX_ID_LENGTH} characters")
    return text


def _derive_id(event_type: str, basis: bytes) -> str:
    """A stable id for an event that brought none: same type and body, same id."""
    digest = hashlib.blake2b(event_type.encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(b"\0")
    digest.update(basis)
    return digest.hexdigest()


def _source(value: Any, where: str) -> str:
    if value is None:
        return DEFAULT_SOURCE
    if type(value) is not str:
        raise DecodeError(f"'{where}' must be a string, got {_kind(value)}")
    if not value:
        raise DecodeError(f"'{where}' is empty")
    return value


def _subject(value: Any, where: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise DecodeError(f"'{where}' must be a string, got {_kind(value)}")


def _data(value: Any, where: str) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise DecodeError(f"'{where}' is {_kind(value)}, not a JSON object")


def _base64_data(value: Any) -> dict[str, Any]:
    if type(value) is not str:
        raise DecodeError(f"'data_base64' must be a string, got {_kind(value)}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("'data_base64' is not valid base64") from None
    return _data(parse_json(raw, "data_base64"), "data_base64")


def _default_time(received_at: datetime | None) -> datetime:
    if received_at is None:
        return datetime.now(UTC)
    return _utc(received_at)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _utc_in_range(moment: datetime, where: str) -> datetime:
    try:
        return _utc(moment)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past datetime's range in UTC
        raise DecodeError(f"'{where}' is out of range in UTC: {_short(moment.isoformat())}") from None


def _time(value: Any, where: str, received_at: datetime | None) -> datetime:
    if value is None:
        return _default_time(received_at)
    if isinstance(value, datetime):  # AMQP headers may carry a decoded timestamp
        return _utc_in_range(value, where)
    if type(value) is not str:
        raise DecodeError(f"'{where}' must be an RFC 3339 timestamp string, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows a lower-case 't' and 'z'
        except ValueError:
            raise DecodeError(f"'{where}' is not an RFC 3339 timestamp: {_short(value)}") from None
    return _utc_in_range(parsed, where)


def _epoch_ms(value: Any) -> datetime:
    if type(value) not in (int, float):
        raise DecodeError(f"'ts' must be milliseconds since the epoch, got {_kind(value)}")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise DecodeError(f"'ts' is out of range: {_short(value)}") from None


def _format_time(moment: datetime) -> str:
    text = _utc(moment).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- bodies and headers ----------------------------------------------------------------------


def _structured_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/cloudevents-batch+json":
        raise DecodeError("CloudEvents batch mode is not supported: send one event per message")
    return media == CLOUDEVENTS_CONTENT_TYPE


def parse_json(body: bytes, what: str = "body") -> Any:
    """Parse ``body`` as strict JSON (UTF-8, unique keys, finite numbers, no lone surrogates).

    Raises DecodeError saying what is wrong with ``what``. HTTP ingest and the broker decoder
    share it, so an event the ingest accepts is one the router can read.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8 (invalid byte at offset {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text or text.isspace():
        raise DecodeError(f"{what} is empty")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DecodeError(f"{what} is nested too deeply") from None
    except _InfiniteNumber:
        raise DecodeError(f"{what} holds a number out of range (it reads as infinity)") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise DecodeError(f"{what} holds an integer too large to read") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None:
        _check_surrogates(value, what)
    return value


def _check_surrogates(value: Any, what: str) -> None:
    """Reject text holding a lone UTF-16 surrogate: no channel, log or dead letter could encode it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(f"{what} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text") from None


def _parse_data_body(body: bytes) -> dict[str, Any]:
    if not body or body.isspace():
        return {}
    return _data(parse_json(body, "body"), "body")


def _binary_attributes(headers: Mapping[str, Any]) -> dict[str, Any] | None:
    """CloudEvents attributes carried in headers, or None when the message is not binary mode."""
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        if type(key) is not str:
            continue
        lower = key.lower()
        for prefix in BINARY_PREFIXES:
            if lower.startswith(prefix):
                name = lower[len(prefix) :]
                if isinstance(value, (bytes, bytearray)):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise DecodeError(f"header '{key}' is not UTF-8") from None
                if prefix == "ce-" and type(value) is str and "%" in value:
                    try:
                        value = unquote(value, errors="strict")
                    except UnicodeDecodeError:
                        raise DecodeError(f"header '{key}' is not valid percent-encoded UTF-8") from None
                attributes[name] = value
                break
    return attributes if "specversion" in attributes else None


def _copy_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    # The event outlives the transport's header object, and conditions compare strings.
    if not headers:
        return {}
    return {
        str(k): v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v for k, v in headers.items()
    }


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode(
        "utf-8",
        "surrogatepass",  # only hashed: a lone surrogate (from a lax parser) must not fail the id
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _kind(value: Any) -> str:
    """How a JSON value is described in error messages: 'an array', 'a string'..."""
    return kind_of(value, json=True)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
