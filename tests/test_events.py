"""Decoding wire messages into events, and encoding them back."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from router.core.errors import DecodeError
from router.core.events import DEFAULT_SOURCE, Event, decode, encode, event_from_object
from tests import builders

RECEIVED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# -- CloudEvents structured mode -------------------------------------------------------------


CE = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "app/planets",
    "type": "planet.completed",
    "time": "2024-05-01T10:00:00Z",
    "subject": "planet-7",
    "datacontenttype": "application/json",
    "data": {"planet": {"difficulty": 4}},
}


@pytest.mark.parametrize(
    "content_type",
    ["application/cloudevents+json", "Application/CloudEvents+JSON; charset=utf-8", None, "application/json"],
)
def test_structured_mode_by_content_type_or_specversion(content_type: str | None) -> None:
    event = decode(body(CE), content_type=content_type, routing_key="rk", received_at=RECEIVED)
    assert event == Event(
        type="planet.completed",
        id="evt-1",
        source="app/planets",
        time=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        data={"planet": {"difficulty": 4}},
        subject="planet-7",
        routing_key="rk",
    )


def test_structured_mode_data_base64() -> None:
    doc = {**CE, "data": None, "data_base64": base64.b64encode(b'{"n": 1}').decode()}
    assert decode(body(doc)).data == {"n": 1}


def test_structured_mode_without_data_is_empty_object() -> None:
    doc = {k: v for k, v in CE.items() if k != "data"}
    assert decode(body(doc)).data == {}


def test_structured_mode_ignores_extension_attributes() -> None:
    event = decode(body({**CE, "traceparent": "00-abc", "tenant": "acme"}))
    assert event.data == CE["data"]


# -- CloudEvents binary mode -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ce-", "cloudEvents_", "cloudEvents:", "CE-", "CLOUDEVENTS_"])
def test_binary_mode_with_each_header_prefix(prefix: str) -> None:
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": "evt-9",
        f"{prefix}source": "billing",
        f"{prefix}type": "invoice.paid",
        f"{prefix}time": "2024-05-01T10:00:00+02:00",
        f"{prefix}subject": "inv-1",
        "x-other": "kept",
    }
    event = decode(b'{"amount": 12}', content_type="application/json", headers=headers, received_at=RECEIVED)
    assert (event.type, event.id, event.source, event.subject) == ("invoice.paid", "evt-9", "billing", "inv-1")
    assert event.time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert event.data == {"amount": 12}
    assert event.headers["x-other"] == "kept"


def test_binary_mode_amqp_bytes_headers_and_timestamp() -> None:
    when = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    headers = {"cloudEvents:specversion": b"1.0", "cloudEvents:type": b"user.signed_up", "cloudEvents:time": when}
    event = decode(b'{"user": 1}', headers=headers)
    assert event.type == "user.signed_up"
    assert event.time == when
    assert event.headers["cloudEvents:type"] == "user.signed_up"  # bytes become text for conditions


def test_binary_mode_http_percent_encoded_values() -> None:
    headers = {"ce-specversion": "1.0", "ce-type": "a.b", "ce-subject": "caf%C3%A9"}
    assert decode(b"{}", headers=headers).subject == "café"


def test_binary_mode_empty_body_is_empty_data() -> None:
    assert decode(b"", headers={"ce-specversion": "1.0", "ce-type": "a.b"}).data == {}


def test_binary_mode_type_falls_back_to_routing_key() -> None:
    assert decode(b"{}", headers={"ce-specversion": "1.0"}, routing_key="x.y").type == "x.y"


def test_structured_content_type_wins_over_binary_headers() -> None:
    headers = {"ce-specversion": "1.0", "ce-type": "from.headers"}
    event = decode(body(CE), content_type="application/cloudevents+json", headers=headers)
    assert event.type == "planet.completed"


def test_headers_without_specversion_are_not_binary_mode() -> None:
    event = decode(b'{"type": "plain.one"}', headers={"ce-type": "other.type"})
    assert event.type == "plain.one"


# -- Inngest and plain JSON ------------------------------------------------------------------


def test_inngest_style() -> None:
    ts = int(datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC).timestamp() * 1000)
    event = decode(body({"name": "app/user.created", "data": {"id": 5}, "id": "01H", "ts": ts}))
    assert (event.type, event.id, event.source) == ("app/user.created", "01H", DEFAULT_SOURCE)
    assert event.time == datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert event.data == {"id": 5}


def test_plain_with_type_field_makes_the_rest_data() -> None:
    event = decode(body({"type": "user.signed_up", "id": 42, "email": "a@b.c"}), received_at=RECEIVED)
    assert event.type == "user.signed_up"
    assert event.data == {"id": 42, "email": "a@b.c"}  # a domain 'id' stays in data
    assert event.id != "42"
    assert event.source == DEFAULT_SOURCE
    assert event.time == RECEIVED


def test_plain_takes_type_from_routing_key() -> None:
    event = decode(b'{"user": {"tier": "gold"}}', routing_key="user.upgraded")
    assert event.type == "user.upgraded"
    assert event.routing_key == "user.upgraded"
    assert event.data == {"user": {"tier": "gold"}}


def test_plain_envelope_with_data_object() -> None:
    doc = {"type": "a.b", "id": "e1", "source": "svc", "time": "2024-05-01T10:00:00Z", "subject": "s", "data": {"k": 1}}
    event = decode(body(doc))
    assert (event.id, event.source, event.subject, event.data) == ("e1", "svc", "s", {"k": 1})


def test_plain_with_name_but_no_data_is_not_inngest() -> None:
    event = decode(b'{"name": "Ada"}', routing_key="user.named")
    assert (event.type, event.data) == ("user.named", {"name": "Ada"})


# -- defaults --------------------------------------------------------------------------------


def test_missing_id_is_deterministic_per_type_and_body() -> None:
    raw = b'{"type": "order.created", "order": 7}'
    first, again = decode(raw), decode(raw)
    assert first.id == again.id
    assert decode(b'{"type": "order.created", "order": 8}').id != first.id
    # Same body under two routing keys: two different events.
    assert decode(b"{}", routing_key="a.logged_in").id != decode(b"{}", routing_key="a.logged_out").id


def test_event_from_object_id_matches_raw_body_or_is_canonical() -> None:
    raw = b'{"type": "t.x", "b": 1, "a": 2}'
    assert event_from_object(json.loads(raw), body_for_id=raw).id == decode(raw).id
    one = event_from_object({"type": "t.x", "a": 2, "b": 1})
    other = event_from_object({"b": 1, "type": "t.x", "a": 2})
    assert one.id == other.id  # key order does not change the derived id


def test_event_from_object_does_not_modify_its_input() -> None:
    obj = {"type": "a.b", "k": 1}
    event = event_from_object(obj)
    assert obj == {"type": "a.b", "k": 1}
    assert event.data == {"k": 1}


def test_event_from_object_binary_mode() -> None:
    event = event_from_object({"k": 1}, headers={"ce-specversion": "1.0", "ce-type": "a.b", "ce-id": "x1"})
    assert (event.type, event.id, event.data) == ("a.b", "x1", {"k": 1})


def test_missing_time_is_received_at_or_now_in_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    assert decode(b'{"type": "a.b"}', received_at=naive).time == RECEIVED
    before = datetime.now(UTC)
    stamped = decode(b'{"type": "a.b"}').time
    assert before <= stamped <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01t10:00:00z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_times_are_parsed_and_normalised_to_utc(text: str, expected: datetime) -> None:
    event = decode(body({**CE, "time": text}))
    assert event.time == expected
    assert event.time.utcoffset() == timedelta(0)


def test_headers_are_copied_and_bytes_decoded() -> None:
    headers = {"x-tenant": b"acme", "x-n": 3}
    event = decode(b'{"type": "a.b"}', headers=headers)
    headers["x-n"] = 4
    assert event.headers == {"x-tenant": "acme", "x-n": 3}


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kwargs", "reason"),
    [
        (b'{"type": "a\xff"}', {}, "not UTF-8"),
        (b"", {}, "body is empty"),
        (b"   ", {}, "body is empty"),
        (b'{"type": "a.b",', {}, "body is not JSON"),
        (b'{"type": "a.b", "n": NaN}', {}, "NaN is not a JSON value"),
        (b"[1, 2]", {}, "body is an array, not a JSON object"),
        (b'"text"', {}, "body is a string, not a JSON object"),
        (b'{"k": 1}', {}, "no event type"),
        (b'{"type": 5}', {}, "'type' must be a string, got a number"),
        (b'{"type": "a..b"}', {}, "not a dotted name"),
        (b'{"type": "a b"}', {}, "not a dotted name"),
        (b'{"type": "a.*"}', {}, "not a dotted name"),
        (b"{}", {"routing_key": "a.#"}, "in 'routing key' is not a dotted name"),
        (b'{"type": "' + b"a" * 300 + b'"}', {}, "longer than 255"),
        (b'{"type": "a.b", "data": [1]}', {}, "'data' is an array, not a JSON object"),
        (b'{"type": "a.b", "data": {}, "time": "yesterday"}', {}, "'time' is not an RFC 3339 timestamp"),
        (b'{"type": "a.b", "data": {}, "time": 1714557600}', {}, "'time' must be an RFC 3339 timestamp string"),
        (b'{"type": "a.b", "data": {}, "id": ""}', {}, "'id' is empty"),
        (b'{"type": "a.b", "data": {}, "id": true}', {}, "'id' must be a string, got a boolean"),
        (b'{"type": "a.b", "data": {}, "source": 1}', {}, "'source' must be a string"),
        (b'{"type": "a.b", "data": {}, "subject": []}', {}, "'subject' must be a string, got an array"),
        (b'{"name": "a.b", "data": {}, "ts": "soon"}', {}, "'ts' must be milliseconds"),
        (b'{"name": "a.b", "data": {}, "ts": 1e30}', {}, "'ts' is out of range"),
        (b'{"name": "a.b", "data": 3}', {}, "'data' is a number"),
        (b'{"specversion": "0.3", "type": "a.b"}', {}, "unsupported CloudEvents specversion '0.3'"),
        (b'{"type": "a.b"}', {"content_type": "application/cloudevents+json"}, "has no 'specversion'"),
        (b"[]", {"content_type": "application/cloudevents-batch+json"}, "batch mode is not supported"),
        (b'{"specversion": "1.0", "type": "a.b", "data_base64": "%%%"}', {}, "'data_base64' is not valid base64"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
        (b"[1]", {"headers": {"ce-specversion": "1.0", "ce-type": "a.b"}}, "'body' is an array"),
        (b"{}", {"headers": {"ce-specversion": "2.0", "ce-type": "a.b"}}, "specversion '2.0' in headers"),
        (b"{}", {"headers": {"cloudEvents_specversion": "1.0", "cloudEvents_type": b"\xff"}}, "is not UTF-8"),
    ],
)
def test_undecodable_messages_raise_with_a_reason(raw: bytes, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=None) as caught:
        decode(raw, **kwargs)
    assert reason in str(caught.value)


def test_errors_never_quote_the_body() -> None:
    raw = b'{"type": "a.b", "token": "hunter2-secret", "data": [1]}'
    with pytest.raises(DecodeError) as caught:
        decode(raw)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(DecodeError) as caught:
        decode(b'{"token": "hunter2-secret", ')
    assert "hunter2" not in str(caught.value)


def test_decode_accepts_bytearray_and_memoryview_but_not_text() -> None:
    raw = b'{"type": "a.b", "k": 1}'
    at = RECEIVED
    assert (
        decode(bytearray(raw), received_at=at) == decode(memoryview(raw), received_at=at) == decode(raw, received_at=at)
    )
    with pytest.raises(TypeError, match="bytes"):
        decode(raw.decode())  # type: ignore[arg-type]  # the mistake under test


@pytest.mark.parametrize("obj", [[1], "x", None, 3])
def test_event_from_object_rejects_non_objects(obj: Any) -> None:
    with pytest.raises(DecodeError, match="not a JSON object"):
        event_from_object(obj)


# -- encode ----------------------------------------------------------------------------------


def make_event(**overrides: Any) -> Event:
    """An event whose time has microseconds and whose data has every JSON kind, to round-trip."""
    fields: dict[str, Any] = {
        "source": "app",
        "time": datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
        "data": {"planet": {"id": 3, "tags": ["x", "é"], "ok": True, "none": None, "f": 1.5}},
    }
    return builders.make_event(**{**fields, **overrides})


@pytest.mark.parametrize(
    "event",
    [
        make_event(),
        make_event(subject="planet-3"),
        make_event(time=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), data={}),
    ],
)
def test_encode_round_trips(event: Event) -> None:
    assert decode(encode(event)) == event


def test_round_trip_with_transport_metadata_passed_beside_the_body() -> None:
    event = make_event(routing_key="planet.completed", headers={"x-tenant": "acme"})
    assert decode(encode(event), routing_key=event.routing_key, headers=event.headers) == event


def test_encode_writes_cloudevents_structured_json() -> None:
    doc = json.loads(encode(make_event()))
    assert doc["specversion"] == "1.0"
    assert doc["time"] == "2024-05-01T10:00:00.123456Z"
    assert doc["datacontenttype"] == "application/json"
    assert "subject" not in doc


def test_encode_rejects_data_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode(make_event(data={"x": float("nan")}))
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode(make_event(data={"x": {1, 2}}))
