"""``digest: {window, max_events, key}``: matching events are collected per key in the state
store and delivered as one notification when the window closes or ``max_events`` is reached.

Buckets live in the state store (durable: a restart or a reload neither loses nor resets
them); :mod:`router.flow.flusher` turns each closed bucket into one job record that runs the
rule once for the whole batch. Templates see the batch as ``events`` and its size as ``count``;
``event`` and ``data`` are the batch's first event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from router.config.models import DigestSpec, Rule
from router.core.durations import format_duration
from router.core.errors import DecodeError
from router.core.events import Event, decode, encode
from router.core.message import Message
from router.flow.keys import MAX_KEY_LENGTH, shown
from router.state.base import DigestAdd, StateStore

BUCKET_PREFIX = "rule:"
"""Digest buckets of rules; channel folds use ``fold:`` (router.pipeline.fold)."""


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One collected event and the rule it was collected for."""

    rule: str
    event: Event


def bucket_key(rule: str, key: str) -> str:
    """The state-store bucket of ``rule``'s digest for ``key``."""
    if len(key) > MAX_KEY_LENGTH:
        key = "#" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return f"{BUCKET_PREFIX}{rule}:{key}"


def encode_item(rule: Rule, event: Event) -> bytes:
    return json.dumps({"rule": rule.name, "event": json.loads(encode(event))}, separators=(",", ":")).encode()


def decode_item(raw: bytes) -> DigestItem:
    """Parse an item; raises DecodeError when it is not one."""
    try:
        payload = json.loads(raw)
        event = decode(json.dumps(payload["event"]).encode(), content_type="application/cloudevents+json")
        return DigestItem(rule=str(payload["rule"]), event=event)
    except DecodeError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise DecodeError(f"malformed digest item: {type(error).__name__}") from None


async def collect(state: StateStore, rule: Rule, spec: DigestSpec, key: str, event: Event) -> DigestAdd:
    """Add ``event`` to its bucket (opening it on the first event); durable when this returns."""
    return await state.digest_add(bucket_key(rule.name, key), encode_item(rule, event), spec.window, spec.max_events)


def batch_id(bucket: str, items: Sequence[bytes]) -> str:
    """A batch's id, the same every time for the same items: a batch scheduled twice (a crash
    between scheduling and removing it) has one idempotency key and is delivered once."""
    digest = hashlib.blake2b(bucket.encode(), digest_size=16)
    for item in items:
        digest.update(hashlib.blake2b(item, digest_size=16).digest())
    return "digest-" + digest.hexdigest()


def unique_events(events: Sequence[Event]) -> list[Event]:
    """``events`` without repeats (an event collected twice after a redelivery), in order."""
    seen: set[str] = set()
    unique: list[Event] = []
    for event in events:
        if event.key not in seen:
            seen.add(event.key)
            unique.append(event)
    return unique


def digest_event(digest_id: str, events: Sequence[Event]) -> Event:
    """The event a digest runs as: the first of the batch, under the digest's own id."""
    return replace(events[0], id=digest_id, routing_key=None, headers={})


def with_digest_meta(message: Message, events: Sequence[Event]) -> Message:
    """``message`` with the batch recorded in its meta (webhooks post it: every event is accounted for)."""
    if not events:
        return message
    digest = {"count": len(events), "events": [event.id for event in events]}
    return replace(message, meta={**message.meta, "digest": digest})


def describe(spec: DigestSpec, key: str) -> str:
    return (
        f"digest: {shown(key)}: collected for {format_duration(spec.window)} or until {spec.max_events} "
        "events, then delivered as one notification"
    )
