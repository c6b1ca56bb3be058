"""Properties of event decoding: whatever arrives, the decoder returns an Event or raises DecodeError.

A poison message must become a dead letter with a reason; any other exception escaping the
decoder would instead requeue it forever (or stop the consumer). Decoded events must also
survive :func:`encode`, which the dead-letter path and digests use.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.errors import DecodeError
from router.core.events import Event, decode, encode, event_from_object

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON scalars include the awkward ones: huge integers, extreme floats, lone surrogates.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["a.b", "1.0", "0.3", "", "2024-05-01T10:00:00Z", "9999-12-31T23:59:59-05:00", "\ud800"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

# Objects built from the envelope's own vocabulary reach the format-specific code paths.
ENVELOPE_KEYS = ["type", "specversion", "id", "source", "time", "data", "data_base64", "subject", "name", "ts"]
envelope_values = st.one_of(
    json_values,
    st.sampled_from(["1.0", "a.b.c", "e30=", "eyJ4Ijox", "not base64!", "2024-01-01", "0001-01-01T00:00:00+01:00"]),
    st.integers(min_value=-(10**20), max_value=10**20),
)
envelopes = st.dictionaries(st.sampled_from(ENVELOPE_KEYS), envelope_values, max_size=7)

# Fragments whose concatenation is often almost-JSON: the parser's error paths.
FRAGMENTS = [
    "{", "}", "[", "]", ",", ":", '"type"', '"a.b"', '"data"', "{}", "1e999", "-1e999", "NaN", "Infinity",
    "-Infinity", "null", "true", '"\\ud800"', '"\\ud83d\\ude00"', "1" * 5000, "\ufeff", " ", '"specversion"',
    '"1.0"', '"x"', "0", "\x00", "\\",
]  # fmt: skip
almost_json = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # ASCII: lone surrogates travel as escapes


bodies = st.one_of(
    st.binary(max_size=64),
    almost_json.map(lambda text: text.encode("utf-8", "surrogatepass")),
    json_values.map(_dump),
    envelopes.map(_dump),
    st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"[" * 3000 + b"]" * 3000]),
)

header_values = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.integers(),
    st.booleans(),
    st.floats(),
    st.just(datetime(2024, 1, 1, tzinfo=UTC)),
    st.just(datetime(9999, 12, 31, 23, 59)),
    st.sampled_from(["1.0", "0.3", "a.b", "%ff", "%41", "\xff"]),
    st.lists(st.text(max_size=4), max_size=2),
)
header_keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from([f"{p}{a}" for p in ("ce-", "CE-", "cloudEvents_", "cloudEvents:") for a in ENVELOPE_KEYS]),
)
headers = st.one_of(st.none(), st.dictionaries(header_keys, header_values, max_size=6))
content_types = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=utf-8",
            "application/cloudevents-batch+json",
            "",
        ]
    ),
)
routing_keys = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["a.b", "order.created", "a..b", "*"]))


def _assert_usable(event: Event) -> None:
    """A decoded event is what the engine needs: typed fields, and encodable for dead letters."""
    assert isinstance(event.type, str) and event.type
    assert isinstance(event.id, str) and event.id
    assert isinstance(event.source, str) and event.source
    assert event.time.tzinfo is not None
    assert type(event.data) is dict
    again = decode(encode(event))  # the dead-letter body must decode back to the same event
    assert (again.type, again.id, again.source, again.time, again.subject) == (
        event.type,
        event.id,
        event.source,
        event.time,
        event.subject,
    )
    assert again.data == event.data


@SETTINGS
@given(body=bodies, content_type=content_types, headers=headers, routing_key=routing_keys)
def test_decode_returns_an_event_or_raises_decode_error(
    body: bytes, content_type: str | None, headers: dict[str, Any] | None, routing_key: str | None
) -> None:
    try:
        event = decode(body, content_type=content_type, headers=headers, routing_key=routing_key)
    except DecodeError as error:
        assert str(error), "a poison message's reason is never empty"
        return
    _assert_usable(event)


@SETTINGS
@given(obj=st.one_of(json_values, envelopes), content_type=content_types, headers=headers, routing_key=routing_keys)
def test_event_from_object_returns_an_event_or_raises_decode_error(
    obj: Any, content_type: str | None, headers: dict[str, Any] | None, routing_key: str | None
) -> None:
    before = json.dumps(obj, sort_keys=True)
    try:
        event = event_from_object(obj, content_type=content_type, headers=headers, routing_key=routing_key)
    except DecodeError as error:
        assert str(error)
        return
    finally:
        assert json.dumps(obj, sort_keys=True) == before, "the caller's object is never modified"
    assert isinstance(event.type, str) and type(event.data) is dict
    encode(event)  # never raises for an event built from JSON, even one holding a lone surrogate


@SETTINGS
@given(body=st.binary(min_size=1, max_size=64))
def test_the_reason_never_quotes_the_body(body: bytes) -> None:
    # Bodies may hold personal data: reasons say what is wrong, not what was sent.
    secret = b"zq7SECRETxk"
    try:
        decode(body + secret)
    except DecodeError as error:
        assert "zq7SECRETxk" not in str(error)


def test_each_bad_input_has_its_own_reason() -> None:
    reasons = {
        b"[" * 100_000: "nested too deeply",
        b'{"type": "a.b", "n": 1' + b"0" * 5000 + b"}": "integer too large",
        b'{"type": "a.b", "n": 1e999}': "out of range",
        b'{"type": "a.b", "n": 1' + b"0" * 250 + b"e60}": "out of range",  # infinity with a small exponent
        b'{"type": "a.b", "n": -1' + b"0" * 400 + b".5}": "out of range",  # infinity without an exponent
        b'{"type": "a.b", "n": NaN}': "NaN is not a JSON value",
        b'{"type": "a.b", "type": "c.d"}': "duplicate key 'type'",
        b'{"type": "a.b", "s": "\\udc00"}': "lone UTF-16 surrogate",
        b'{"type": "a.b", "time": "9999-12-31T23:59:59-05:00", "data": {}}': "out of range in UTC",
        b"\xff\xfe": "not UTF-8",
        b"[1, 2]": "an array, not a JSON object",
        b'{"type": "a.b", "data": [1]}': "'data' is an array",
        b'{"specversion": "0.3", "type": "a.b"}': "specversion '0.3'",
    }
    for body, reason in reasons.items():
        try:
            decode(body, routing_key="fallback.type")
        except DecodeError as error:
            assert reason in str(error), (body[:40], str(error))
        else:
            raise AssertionError(f"{body[:40]!r} decoded")
    # Large but finite numbers are numbers; surrogate pairs are ordinary text (an emoji escaped
    # by an ASCII-only publisher).
    assert decode(b'{"type": "a.b", "n": 1e308, "m": 1' + b"0" * 400 + b"}").data["n"] == 1e308
    assert decode(b'{"type": "a.b", "s": "\\ud83d\\ude00"}').data == {"s": "\U0001f600"}


def test_text_that_looks_like_a_huge_number_is_kept_as_text() -> None:
    body = b'{"type": "a.b", "data": {"id": "1e999", "digits": "' + b"9" * 300 + b'", "n": 2.5e10}}'
    event = decode(body, routing_key="fallback.type")
    assert event.data == {"id": "1e999", "digits": "9" * 300, "n": 2.5e10}
