"""Channel pacing: the stage alone (fake clock, real SQLite store and queue), then end to end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.channels.base import ChannelConfig, RateLimit, effective_fold, effective_rate_limit
from router.channels.console import ConsoleChannel
from router.channels.discord import DiscordChannel
from router.channels.slack import SlackChannel
from router.channels.webhook import WebhookChannel
from router.core.delivery import Delivery
from router.core.message import Message, Outcome
from router.core.records import RetryRecord
from router.pipeline import fold
from router.pipeline.pacing import SEND_GUARD, SLOT_META, Pace, Pacing, pace_of
from router.state.sqlite import SqliteStateStore
from router.support.metrics import Metrics
from router.transports.embedded import EmbeddedTransport
from tests.builders import make_event
from tests.engine_support import Harness, start_harness, until
from tests.flow_support import TEMPLATES, TimedChannel, event, flow_registry, got, rules_yaml

START = 1_700_000_000.0


class Clock:
    """A store clock moved by the stage's sleeps: time passes only when something waits."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteStateStore]:
    async with SqliteStateStore(tmp_path / "state.db", clock=clock) as opened:
        yield opened


@pytest.fixture
async def transport(tmp_path: Path) -> AsyncIterator[EmbeddedTransport]:
    queue = EmbeddedTransport(tmp_path / "queue.db")
    await queue.connect()
    yield queue
    await queue.close()


def stage(store: SqliteStateStore, transport: EmbeddedTransport, clock: Clock, pace: Pace, **kw: object) -> Pacing:
    kw.setdefault("sleep", clock.sleep)
    return Pacing(
        state=store,
        transport=transport,
        metrics=Metrics(),
        paces={"chat": pace},
        sent_ttl=3600,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def delivery(n: int, rule: str = "r", meta: dict[str, object] | None = None) -> Delivery:
    ev = make_event({"n": n}, type="t", id=f"e{n}", source="test", time=datetime.now(UTC))
    message = Message(f"title {n}", f"body {n}", meta={"event_id": ev.id, **(meta or {})})
    return Delivery(ev, rule, "chat", "timed", message)


class Sent:
    """The rest of the chain: records what reached it, answers ``outcomes`` in turn."""

    def __init__(self, clock: Clock, *outcomes: Outcome) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.at: list[tuple[float, Delivery]] = []

    async def __call__(self, item: Delivery) -> Outcome:
        self.at.append((self.clock.now - START, item))
        return self.outcomes.pop(0) if self.outcomes else Outcome.sent()


def busiest(times: list[float], period: float) -> int:
    """The most of ``times`` inside any window of ``period`` seconds (as a provider counts them)."""
    return max(sum(1 for t in times if start <= t < start + period) for start in times)


def retry_records(tmp_path: Path) -> list[RetryRecord]:
    with sqlite3.connect(tmp_path / "queue.db") as conn:
        return [RetryRecord.from_bytes(row[0]) for row in conn.execute("SELECT body FROM retries ORDER BY id")]


# --- defaults and configuration


def test_discord_and_slack_default_to_their_documented_limits_and_fold() -> None:
    assert DiscordChannel.default_rate_limit == RateLimit(limit=5, period=2)
    assert SlackChannel.default_rate_limit == RateLimit(limit=1, period=1)
    assert DiscordChannel.fold_by_default and SlackChannel.fold_by_default
    assert WebhookChannel.default_rate_limit is None and not WebhookChannel.fold_by_default
    assert ConsoleChannel.default_rate_limit is None


def test_rate_limit_and_folding_are_configurable_per_channel() -> None:
    default = ChannelConfig(type="discord")
    assert effective_rate_limit(DiscordChannel, default) == RateLimit(limit=5, period=2)
    mine = ChannelConfig.model_validate({"type": "discord", "rate_limit": {"limit": 30, "period": "1m"}})
    assert effective_rate_limit(DiscordChannel, mine) == RateLimit(limit=30, period=60)
    off = ChannelConfig.model_validate({"type": "discord", "rate_limit": False, "fold_when_saturated": False})
    assert effective_rate_limit(DiscordChannel, off) is None and not effective_fold(DiscordChannel, off)
    hook = ChannelConfig.model_validate({"type": "webhook", "rate_limit": {"limit": 5, "period": "2s"}})
    assert pace_of(WebhookChannel, hook) == Pace(limit=5, period=2, fold=False)
    assert pace_of(WebhookChannel, ChannelConfig(type="webhook")) is None


def test_interval_leaves_headroom_and_hold_allows_a_short_queue() -> None:
    discord = Pace(limit=5, period=2, fold=True)
    assert discord.interval == pytest.approx((2 * 1.1 + 0.05) / 5)
    assert discord.interval * 5 > 2  # never `limit` sends inside one of the provider's periods
    assert discord.hold == 2
    slack = Pace(limit=1, period=1, fold=True)
    assert slack.hold == pytest.approx(3 * slack.interval)  # three may queue before it counts as saturated


# --- the stage


async def test_unpaced_channel_goes_straight_through(store, transport, clock) -> None:
    pacing = stage(store, transport, clock, Pace(1, 1, False))
    sent = Sent(clock)
    other = delivery(1)
    other.channel = "elsewhere"
    for _ in range(5):
        assert (await pacing(other, sent)).ok
    assert clock.sleeps == [] and len(sent.at) == 5


async def test_sends_are_spaced_by_the_interval(store, transport, clock) -> None:
    pace = Pace(limit=2, period=1, fold=False)  # one send per 0.575s
    pacing = stage(store, transport, clock, pace)
    sent = Sent(clock)
    for n in range(4):  # back to back: each waits for the slot after the previous one
        assert (await pacing(delivery(n), sent)).ok
    assert [round(at, 3) for at, _ in sent.at] == [0, 0.575, 1.15, 1.725]


async def test_beyond_the_hold_a_delivery_waits_durably_keeping_its_slot(store, transport, clock, tmp_path) -> None:
    pace = Pace(limit=2, period=1, fold=False)  # hold 1.725s
    pacing = stage(store, transport, clock, pace)
    for _ in range(4):  # other senders took the slots up to 1.725s
        await store.pace("chat", 1, pace.interval)
    outcome = await pacing(delivery(1), Sent(clock))
    assert outcome.status == "skipped" and "deferred" in outcome.reason
    [record] = retry_records(tmp_path)
    assert record.message is not None and record.message.meta[SLOT_META] == pytest.approx(START + 4 * pace.interval)
    assert record.attempt == 0, "waiting for a slot is not a failed attempt"
    assert clock.sleeps == []


async def test_a_late_send_pushes_the_next_one_back(store, transport, clock) -> None:
    pace = Pace(limit=2, period=1, fold=False)
    lag = clock.sleep

    async def sleep(seconds: float) -> None:
        await lag(seconds)
        if len(clock.sleeps) == 1:
            clock.now += 0.3  # the event loop was busy: this send begins 0.3s after its slot

    pacing = stage(store, transport, clock, pace, sleep=sleep)
    sent = Sent(clock)
    await store.pace("chat", 1, pace.interval)  # someone else's slot at 0
    await store.pace("chat" + SEND_GUARD, 1, pace.interval)  # ...and its send, on time
    first = asyncio.create_task(pacing(delivery(1), sent))  # slot 0.575, begins at 0.875
    await first
    assert (await pacing(delivery(2), sent)).ok  # slot 1.15, but must begin 0.575 after 0.875
    assert [round(at, 3) for at, _ in sent.at] == [0.875, 1.45]


async def test_a_deferred_delivery_sends_at_its_slot_without_reserving_another(store, transport, clock) -> None:
    pacing = stage(store, transport, clock, Pace(limit=2, period=1, fold=False))
    sent = Sent(clock)
    late = delivery(1, meta={SLOT_META: START + 0.4})
    assert (await pacing(late, sent)).ok
    assert clock.sleeps == [0.4]
    assert SLOT_META not in sent.at[0][1].message.meta, "the slot is not part of the message"
    assert await store.pace("chat", 1, 0.575) == 0  # nothing was reserved for it


async def test_saturated_folding_channel_folds_and_marks_the_delivery_resolved(store, transport, clock) -> None:
    pace = Pace(limit=5, period=2, fold=True)  # hold 2s: about 4 sends may queue
    woken: list[bool] = []
    pacing = stage(store, transport, clock, pace, on_fold=lambda: woken.append(True))
    for _ in range(5):
        await store.pace("chat", 1, pace.interval)  # the queue is full
    outcomes = [await pacing(delivery(n), Sent(clock)) for n in range(3)]
    assert [o.status for o in outcomes] == ["skipped"] * 3
    assert all("folded" in o.reason for o in outcomes) and clock.sleeps == []
    items = [fold.decode_item(raw) for raw in await store.digest_peek("fold:chat")]
    assert [i.events for i in items] == [("e0",), ("e1",), ("e2",)]
    assert await store.is_sent(delivery(2).key), "a redelivered event must not send it on its own"
    assert await store.pace("chat", 1, pace.interval, max_wait=0) == pytest.approx(5 * pace.interval)
    assert woken == [], "the summary goes out when its window closes, not before"


async def test_once_saturated_a_channel_keeps_folding_until_a_window_passes(store, transport, clock) -> None:
    pace = Pace(limit=5, period=2, fold=True)  # fold window 4s
    pacing = stage(store, transport, clock, pace)
    for _ in range(5):
        await store.pace("chat", 1, pace.interval)
    assert "folded" in (await pacing(delivery(1), Sent(clock))).reason
    clock.now += 3  # slots are free again, but the flood may not be over
    assert "folded" in (await pacing(delivery(2), Sent(clock))).reason
    clock.now += pace.fold_window  # quiet for a whole window
    sent = Sent(clock)
    assert (await pacing(delivery(3), sent)).ok and len(sent.at) == 1


def _no_time_passes(clock: Clock) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)

    return sleep


async def test_a_summary_never_folds_it_waits(store, transport, clock, tmp_path) -> None:
    pacing = stage(store, transport, clock, Pace(limit=1, period=1, fold=True))
    await store.block("chat", until=START + 60)
    summary = delivery(1, rule=fold.FOLD_RULE)
    outcome = await pacing(summary, Sent(clock))
    assert outcome.status == "skipped" and "deferred" in outcome.reason
    assert [r.rule for r in retry_records(tmp_path)] == [fold.FOLD_RULE]


async def test_a_429_blocks_the_channel_for_its_retry_after(store, transport, clock) -> None:
    pacing = stage(store, transport, clock, Pace(limit=100, period=1, fold=False))
    sent = Sent(clock, Outcome.retryable("HTTP 429 Too Many Requests", retry_after=5))
    assert (await pacing(delivery(1), sent)).status == "retry"
    assert await store.blocked_for("chat") == pytest.approx(5)
    assert pacing.metrics.channel_rate_limited.labels("chat")._value.get() == 1
    assert (await pacing(delivery(2), sent)).status == "skipped"  # 5s away: deferred, not sent early


async def test_a_slot_reserved_before_a_429_still_waits_for_the_block(store, transport, clock) -> None:
    pacing = stage(store, transport, clock, Pace(limit=2, period=1, fold=False))
    await store.pace("chat", 1, pacing.paces["chat"].interval)  # someone took the first slot
    block_during_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        await block_during_sleep(seconds)
        if len(clock.sleeps) == 1:  # another process got a 429 while this one waited
            await store.block("chat", until=clock.now + 1)

    pacing.sleep = sleep
    sent = Sent(clock)
    assert (await pacing(delivery(1), sent)).ok
    assert sent.at[0][0] >= 0.575 + 1


# --- end to end (embedded queue, SQLite state)


@pytest.fixture(autouse=True)
def _reset() -> None:
    TimedChannel.reset()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(config: str) -> Harness:
        h = await start_harness(tmp_path, config, TEMPLATES, registry=flow_registry())
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()


RULE = "  - {name: r, on: '**', template: one, channels: [a]}"


async def test_a_burst_to_a_folding_channel_ends_as_a_few_messages_with_every_event(harness) -> None:
    channel = "  a: {type: timed, rate_limit: {limit: 5, period: 500ms}, fold_when_saturated: true}"
    h = await harness(rules_yaml(channel, RULE))
    ids = [f"e{i}" for i in range(200)]
    for i, event_id in enumerate(ids):
        await h.publish(event("t", event_id, n=i))
    await until(lambda: sorted(i for r in got("a") for i in r.event_ids) == sorted(ids), timeout=20)
    received = got("a")
    assert len(received) < 25, [r.message.title for r in received]
    assert busiest([r.at for r in received], 0.5) <= 5
    summaries = [r for r in received if "folded" in r.message.meta]
    assert summaries and all("notification" in r.message.title for r in summaries)
    assert h.metrics.channel_folded.labels("a")._value.get() == sum(len(r.event_ids) for r in summaries)
    assert await h.transport.dlq_list() == []


async def test_a_burst_to_a_non_folding_channel_is_sent_whole_at_the_pace(harness) -> None:
    channel = "  a: {type: timed, rate_limit: {limit: 10, period: 500ms}}"
    h = await harness(rules_yaml(channel, RULE))
    for i in range(30):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: len(got("a")) == 30, timeout=20)
    received = got("a")
    assert sorted(r.message.meta["event_id"] for r in received) == sorted(f"e{i}" for i in range(30))
    assert busiest([r.at for r in received], 0.5) <= 10
    assert h.metrics.channel_deferred.labels("a")._value.get() > 0
    assert h.metrics.retries_scheduled.labels("a")._value.get() == 0


async def test_after_a_429_nothing_is_sent_to_the_channel_before_retry_after(harness) -> None:
    import time

    channel = "  a: {type: timed, rate_limit: {limit: 20, period: 1s}, script: ['retry-after:0.6']}"
    h = await harness(rules_yaml(channel, RULE))
    started = time.monotonic()
    for i in range(4):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: len(got("a")) == 4)
    assert TimedChannel.calls["a"] == 5  # one 429, then all four
    assert min(r.at for r in got("a")) - started >= 0.6
    assert h.metrics.channel_rate_limited.labels("a")._value.get() == 1


def test_fold_summary_lists_titles_and_counts_every_event() -> None:
    items = [fold.FoldItem(f"k{i}", "r", f"title {i}", (f"e{i}",)) for i in range(25)]
    items.append(fold.FoldItem("k-digest", "r", "digest", ("d1", "d2", "d3")))
    event_, message = fold.summary("chat", "digest-x", items)
    assert message.title == "26 notifications"
    assert "- title 0" in message.body and "- title 19" in message.body and "- title 20" not in message.body
    assert "…and 6 more" in message.body and "(28 events in all)" in message.body
    assert len(message.meta["folded"]["events"]) == 28 and event_.id == "digest-x"
    json.dumps(message.meta)


def test_a_summary_of_one_is_the_message_itself() -> None:
    only = fold.FoldItem("k", "r", "Ada did it", ("e1",), body="the body", meta={"event_id": "e1", "rule": "r"})
    _, message = fold.summary("chat", "digest-y", [only])
    assert (message.title, message.body) == ("Ada did it", "the body")
    assert message.meta["folded"] == {"count": 1, "events": ["e1"]}


def test_a_folded_rich_message_keeps_its_payload_when_sent_alone() -> None:
    from datetime import UTC, datetime

    from router.core.delivery import Delivery
    from router.core.message import Message

    embeds = {"embeds": [{"title": "Ada did it", "color": 5763719}]}
    message = Message("Ada did it", "the body", meta={"event_id": "e1"}, payload=embeds)
    event_ = make_event(type="t.x", id="e1", source="test", time=datetime.now(UTC))
    delivery = Delivery(event_, "r", "chat", "discord", message, 1)
    item = fold.decode_item(fold.encode_item(delivery))
    assert item.payload == embeds
    _, alone = fold.summary("chat", "digest-z", [item])
    assert alone.payload == embeds
    _, several = fold.summary("chat", "digest-w", [item, fold.FoldItem("k2", "r", "Bo", ("e2",))])
    assert several.payload is None  # a summary is text: it lists the titles
