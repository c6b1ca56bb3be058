"""Folding: when a channel is saturated, deliveries join one summary message instead of a queue.

A burst of thousands of events to a channel that takes a few messages a second would otherwise
queue for many minutes (or answer thousands of 429s). Past the channel's pacing horizon, each
delivery is appended to the channel's fold bucket in the state store and recorded as resolved;
:mod:`router.flow.flusher` sends the bucket as one summary listing the folded titles, with the
count and every event id in its meta, when the bucket's window closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.core.delivery import Delivery
from router.core.errors import DecodeError
from router.core.events import Event
from router.core.message import Message
from router.state.base import DigestAdd, StateStore

BUCKET_PREFIX = "fold:"
FOLD_RULE = "router.fold"
"""The rule name summaries are delivered under (they belong to no rule of the configuration)."""
FOLD_EVENT_TYPE = "router.folded"
MAX_ITEMS = 1000
"""Deliveries per summary: a larger fold is sent as several summaries."""
TITLES_SHOWN = 20
BODY_KEPT = 4096


@dataclass(frozen=True, slots=True)
class FoldItem:
    """One folded delivery."""

    key: str  # the delivery's idempotency key
    rule: str
    title: str
    events: tuple[str, ...]  # the event ids it stands for (several for a folded digest)
    body: str = ""  # kept so that a summary of one is that message itself
    meta: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] | None = None  # a rich message, sent as it was when the summary is of one


def bucket_key(channel: str) -> str:
    return f"{BUCKET_PREFIX}{channel}"


def encode_item(delivery: Delivery) -> bytes:
    message = delivery.message
    title = message.title.strip() or (message.body.strip().splitlines() or [""])[0]
    digest = message.meta.get("digest")
    events = digest.get("events") if isinstance(digest, dict) else None
    ids = [str(i) for i in events] if isinstance(events, list) and events else [delivery.event.id]
    payload = {
        "key": delivery.key,
        "rule": delivery.rule,
        "title": title[:300],
        "events": ids,
        "body": message.body[:BODY_KEPT],
        "meta": message.meta,
    }
    if message.payload is not None:
        payload["payload"] = message.payload
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def decode_item(raw: bytes) -> FoldItem:
    """Parse an item; raises DecodeError when it is not one."""
    try:
        payload = json.loads(raw)
        return FoldItem(
            key=str(payload["key"]),
            rule=str(payload["rule"]),
            title=str(payload["title"]),
            events=tuple(str(i) for i in payload["events"]),
            body=str(payload.get("body", "")),
            meta=dict(payload.get("meta") or {}),
            payload=dict(payload["payload"]) if payload.get("payload") is not None else None,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise DecodeError(f"malformed fold item: {type(error).__name__}") from None


async def fold(state: StateStore, delivery: Delivery, *, window: float, sent_ttl: float) -> DigestAdd:
    """Add ``delivery`` to its channel's summary and record it as resolved.

    Recorded in the sent ledger so that a redelivery of its event does not send it on its own:
    from here on the summary carries it.
    """
    # Both writes at once (neither needs the other): a failure of either raises, the event is
    # requeued, and a second copy of the item is harmless (a summary lists each delivery once).
    added, _ = await asyncio.gather(
        state.digest_add(bucket_key(delivery.channel), encode_item(delivery), window, MAX_ITEMS),
        state.mark_sent(delivery.key, sent_ttl),
    )
    return added


def summary(channel: str, summary_id: str, items: Sequence[FoldItem]) -> tuple[Event, Message]:
    """The event and message of one summary of ``items``."""
    unique = list({item.key: item for item in items}.values())
    event_ids = list(dict.fromkeys(i for item in unique for i in item.events))
    count = len(unique)
    event = Event(
        type=FOLD_EVENT_TYPE,
        id=summary_id,
        source="router",
        time=datetime.now(UTC),
        data={"channel": channel, "count": count, "events": len(event_ids)},
    )
    folded = {"count": count, "events": event_ids}
    if count == 1:
        # Nothing to summarise: the message goes out as it was rendered, a little late.
        only = unique[0]
        return event, Message(only.title, only.body, meta={**only.meta, "folded": folded}, payload=only.payload)
    noun = "notification" if count == 1 else "notifications"
    lines = ["The channel's rate limit was reached, so these were sent as one message:"]
    lines += [f"- {item.title}" for item in unique[:TITLES_SHOWN]]
    if count > TITLES_SHOWN:
        lines.append(f"…and {count - TITLES_SHOWN} more")
    if len(event_ids) != count:
        lines.append(f"({len(event_ids)} events in all)")
    meta = {
        "event_id": summary_id,
        "event_type": FOLD_EVENT_TYPE,
        "source": "router",
        "rule": FOLD_RULE,
        "channel": channel,
        "folded": folded,
    }
    return event, Message(title=f"{count} {noun}", body="\n".join(lines), meta=meta)
