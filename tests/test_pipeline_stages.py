"""Each delivery stage alone: backoff, chaining, concurrency bounds, send guards, skips."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from router.channels.base import Channel, ChannelConfig
from router.config.models import RetryPolicy
from router.core.delivery import Delivery
from router.core.message import Message, Outcome
from router.pipeline.backoff import retry_delay
from router.pipeline.chain import Next, chain
from router.pipeline.concurrency import ChannelConcurrency
from router.pipeline.enabled import CHANNEL_DISABLED, SkipDisabled
from router.pipeline.idempotency import ALREADY_SENT, SkipIfSent
from router.pipeline.send import Send
from router.state import open_state_store
from router.support.metrics import Metrics
from tests.builders import make_event


def delivery(channel: str = "a") -> Delivery:
    event = make_event(type="t.x", id="e1", source="s", time=datetime.now(UTC))
    return Delivery(event=event, rule="r", channel=channel, channel_type="test", message=Message("t", "b"))


async def sent_terminal(_: Delivery) -> Outcome:
    return Outcome.sent()


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff=2, max_backoff=30, jitter=0)
    assert [retry_delay(policy, n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_backoff_jitter_stays_within_its_band() -> None:
    policy = RetryPolicy(attempts=10, backoff=10, max_backoff=600, jitter=0.2)
    rng = random.Random(7)
    delays = [retry_delay(policy, 1, rand=rng) for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50  # actually spread, not lockstep


def test_retry_after_is_a_floor_even_above_the_cap() -> None:
    policy = RetryPolicy(attempts=5, backoff=1, max_backoff=5, jitter=0)
    assert retry_delay(policy, 1, retry_after=42) == 42
    assert retry_delay(policy, 3, retry_after=0.5) == 4


async def test_chain_runs_stages_outermost_first() -> None:
    order: list[str] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, d: Delivery, next: Next) -> Outcome:
            order.append(f"{self.name}>")
            outcome = await next(d)
            order.append(f"<{self.name}")
            return outcome

    run = chain([Tag("a"), Tag("b")], sent_terminal)
    assert (await run(delivery())).ok
    assert order == ["a>", "b>", "<b", "<a"]


async def test_skip_if_sent_consults_the_ledger(tmp_path) -> None:
    state = open_state_store(f"sqlite:///{tmp_path / 's.db'}")
    await state.open()
    try:
        stage = SkipIfSent(state)
        d = delivery()
        assert (await stage(d, sent_terminal)).status == "sent"
        await state.mark_sent(d.key, 60)
        outcome = await stage(d, sent_terminal)
        assert outcome.status == "skipped" and outcome.reason == ALREADY_SENT
    finally:
        await state.close()


async def test_skip_disabled() -> None:
    stage = SkipDisabled(lambda name: name == "on")
    assert (await stage(delivery("on"), sent_terminal)).status == "sent"
    outcome = await stage(delivery("off"), sent_terminal)
    assert outcome.status == "skipped" and outcome.reason == CHANNEL_DISABLED


async def test_channel_concurrency_bounds_one_channel_only() -> None:
    stage = ChannelConcurrency({"slow": 2, "fast": 4})
    running = {"slow": 0, "fast": 0}
    peak = {"slow": 0, "fast": 0}
    release = asyncio.Event()

    async def terminal(d: Delivery) -> Outcome:
        running[d.channel] += 1
        peak[d.channel] = max(peak[d.channel], running[d.channel])
        if d.channel == "slow":
            await release.wait()
        running[d.channel] -= 1
        return Outcome.sent()

    slow = [asyncio.create_task(stage(delivery("slow"), terminal)) for _ in range(6)]
    fast = await asyncio.gather(*(stage(delivery("fast"), terminal) for _ in range(10)))
    assert all(o.ok for o in fast), "fast channel finished while slow was stuck"
    assert peak["slow"] == 2
    release.set()
    await asyncio.gather(*slow)
    assert peak["slow"] == 2


class Exploding(Channel):
    type_name = "exploding"

    async def send(self, message: Message) -> Outcome:
        raise RuntimeError("https://secret.example/token-abc")


class Hanging(Channel):
    type_name = "hanging"

    async def send(self, message: Message) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError


async def test_send_turns_a_raising_channel_into_a_secret_free_retry() -> None:
    channel = Exploding("x", ChannelConfig(type="exploding"))
    outcome = await Send(lambda _: channel, Metrics())(delivery("x"))
    assert outcome.status == "retry"
    assert "RuntimeError" in outcome.reason and "token" not in outcome.reason


async def test_send_times_out_a_hanging_channel() -> None:
    channel = Hanging("x", ChannelConfig(type="hanging"))
    outcome = await Send(lambda _: channel, Metrics(), timeout=0.05)(delivery("x"))
    assert outcome.status == "retry" and "did not answer" in outcome.reason


@pytest.mark.parametrize("status", ["sent", "retry", "failed"])
def test_outcome_constructors(status: str) -> None:
    outcome = {"sent": Outcome.sent(), "retry": Outcome.retryable("x", 3), "failed": Outcome.permanent("y")}[status]
    assert outcome.status == status
    assert outcome.ok == (status == "sent")


class RecordingTransport:
    """Only what ChannelConcurrency uses of a transport: schedule_retry, recorded."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[bytes, float]] = []

    async def schedule_retry(self, record: bytes, *, delay: float, headers: dict[str, object]) -> float:
        self.scheduled.append((record, delay))
        return delay


async def test_a_full_channel_defers_further_deliveries_as_signed_records_without_waiting() -> None:
    from router.core.records import RetryRecord
    from router.pipeline.concurrency import DEFER_META

    transport = RecordingTransport()
    stage = ChannelConcurrency({"slow": 2}, transport=transport, metrics=Metrics())  # type: ignore[arg-type]
    release = asyncio.Event()

    async def terminal(d: Delivery) -> Outcome:
        await release.wait()
        return Outcome.sent()

    busy = [asyncio.create_task(stage(delivery("slow"), terminal)) for _ in range(2)]
    await asyncio.sleep(0)
    later = [delivery("slow") for _ in range(3)]
    for item in later:
        item.attempt = 2
    outcomes = await asyncio.wait_for(asyncio.gather(*(stage(d, terminal) for d in later)), 1)  # never waits
    assert [o.status for o in outcomes] == ["skipped"] * 3
    assert all("concurrency limit" in o.reason for o in outcomes)
    records = [RetryRecord.from_bytes(body) for body, _ in transport.scheduled]
    assert [(r.channel, r.attempt, r.message.meta[DEFER_META]) for r in records if r.message] == [("slow", 1, 1)] * 3
    delays = [delay for _, delay in transport.scheduled]
    assert delays == sorted(delays) and delays[0] < delays[-1], "each deferral takes a later turn"

    release.set()
    await asyncio.gather(*busy)
    back = delivery("slow")
    assert records[0].message is not None
    back.message = records[0].message
    assert (await stage(back, sent_terminal)).ok
    assert DEFER_META not in back.message.meta, "the mark is not content: removed before sending"


@pytest.mark.parametrize(
    ("handlers", "sends_before"), [(64, 0), (0, 12)], ids=["within-its-share-of-handlers", "known-to-be-fast"]
)
async def test_a_burst_on_a_fast_channel_waits_for_slots_in_memory_instead_of_deferring(
    handlers: int, sends_before: int
) -> None:
    # A durable deferral costs a write and a second handling: a burst that fills a channel's
    # slots waits in memory while it holds at most half the transport's handlers (even before
    # any send has told the stage how fast the channel is), and beyond that while the channel
    # is known to free a slot within a moment.
    transport = RecordingTransport()
    stage = ChannelConcurrency({"fast": 2}, transport=transport, metrics=Metrics(), handlers=handlers)  # type: ignore[arg-type]
    for _ in range(sends_before):  # sends that take no time teach the stage the channel is fast
        assert (await stage(delivery("fast"), sent_terminal)).ok
    release = asyncio.Event()

    async def held(d: Delivery) -> Outcome:
        await release.wait()
        return Outcome.sent()

    busy = [asyncio.create_task(stage(delivery("fast"), held)) for _ in range(2)]
    await asyncio.sleep(0)
    burst = [asyncio.create_task(stage(delivery("fast"), sent_terminal)) for _ in range(20)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in burst), "they wait for a slot"
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*busy, *burst), 5)
    assert all(o.ok for o in outcomes)
    assert transport.scheduled == [], "nothing was deferred"


async def test_a_full_channel_holds_at_most_half_the_handlers_and_defers_the_rest() -> None:
    transport = RecordingTransport()
    stage = ChannelConcurrency({"slow": 2}, transport=transport, metrics=Metrics(), handlers=8)  # type: ignore[arg-type]
    release = asyncio.Event()

    async def held(d: Delivery) -> Outcome:
        await release.wait()
        return Outcome.sent()

    tasks = [asyncio.create_task(stage(delivery("slow"), held)) for _ in range(6)]
    await asyncio.sleep(0)
    # 2 sending + 2 waiting = half of 8 handlers; the other 2 were deferred without waiting.
    assert [t.done() for t in tasks] == [False] * 4 + [True] * 2
    assert len(transport.scheduled) == 2
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [o.status for o in outcomes] == ["sent"] * 4 + ["skipped"] * 2


async def test_a_deferred_delivery_back_for_its_turn_goes_ahead_of_new_ones() -> None:
    # Otherwise a steady stream of new deliveries keeps the channel's waiting room full and
    # every returning record is deferred again, later each time: starved.
    from router.pipeline.concurrency import DEFER_META

    transport = RecordingTransport()
    stage = ChannelConcurrency({"hook": 1}, transport=transport, metrics=Metrics(), handlers=8)  # type: ignore[arg-type]
    release = asyncio.Event()
    order: list[str] = []

    async def terminal(d: Delivery) -> Outcome:
        await release.wait()
        order.append(d.event.id)
        return Outcome.sent()

    def new(event_id: str) -> Delivery:
        item = delivery("hook")
        item.event = replace(item.event, id=event_id)
        return item

    tasks = [asyncio.create_task(stage(new(name), terminal)) for name in ("busy", "new-1", "new-2")]
    await asyncio.sleep(0)
    returning = new("returning")
    returning.message = replace(returning.message, meta={**returning.message.meta, DEFER_META: 1})
    tasks.append(asyncio.create_task(stage(returning, terminal)))
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all(o.ok for o in outcomes) and transport.scheduled == []
    assert order == ["busy", "returning", "new-1", "new-2"]


async def test_a_channel_known_to_be_slow_defers_at_once_instead_of_holding_the_handler() -> None:
    transport = RecordingTransport()
    stage = ChannelConcurrency({"slow": 1}, transport=transport, metrics=Metrics())  # type: ignore[arg-type]

    async def slow_send(d: Delivery) -> Outcome:
        await asyncio.sleep(0.3)  # stands for a provider that takes 0.3 s to answer
        return Outcome.sent()

    assert (await stage(delivery("slow"), slow_send)).ok  # the stage now knows: 0.3 s a send
    release = asyncio.Event()

    async def held(d: Delivery) -> Outcome:
        await release.wait()
        return Outcome.sent()

    busy = asyncio.create_task(stage(delivery("slow"), held))
    await asyncio.sleep(0)
    later = asyncio.create_task(stage(delivery("slow"), sent_terminal))
    await asyncio.sleep(0)  # it decides now, before the slot frees
    release.set()
    assert (await asyncio.wait_for(later, 5)).status == "skipped", "deferred, not waited for"
    assert (await busy).ok
    assert len(transport.scheduled) == 1


async def test_before_delivery_hooks_do_not_run_again_on_a_deferred_delivery() -> None:
    from router import hookimpl
    from router.pipeline.concurrency import DEFER_META
    from router.pipeline.hooks import DeliveryHooks
    from router.plugins.manager import Hooks, get_plugin_manager

    class Footer:
        @hookimpl
        def before_delivery(self, delivery: Delivery) -> None:
            delivery.message = Message(
                delivery.message.title, delivery.message.body + " -- footer", delivery.message.meta
            )

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(Footer(), name="footer")
    stage = DeliveryHooks(Hooks(pm))
    first = delivery()
    await stage(first, sent_terminal)
    assert first.message.body == "b -- footer"
    returning = delivery()
    returning.message = Message("t", "b -- footer", {DEFER_META: 1})
    await stage(returning, sent_terminal)
    assert returning.message.body == "b -- footer"


class _Clock:
    """``time.monotonic`` for the concurrency stage, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_saturated_process_is_not_mistaken_for_a_slow_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    # In a flood each send's measured time also holds the event loop's queueing (here 40 ms),
    # yet the channel finishes a send every 2 ms: the waiters' turn is near, and deferring them
    # (a durable write and a second handling each) would only add to the load.
    import router.pipeline.concurrency as concurrency

    clock = _Clock()
    monkeypatch.setattr(concurrency.time, "monotonic", clock)
    channel = concurrency._Channel(limit=8, handlers=256)
    for _ in range(60):
        clock.now += 0.002
        channel.sent(0.040)
    assert channel.send_time == pytest.approx(0.040)
    assert channel.per_slot() == pytest.approx(0.002)
    # The 41st waiter: 41 x 40 ms / 8 = 205 ms by send time alone, 82 ms at the rate sends finish.
    assert 41 * channel.send_time / channel.limit > concurrency.WAIT_IN_MEMORY
    assert 41 * channel.per_slot() <= concurrency.WAIT_IN_MEMORY


def test_a_quiet_spell_does_not_make_a_fast_channel_look_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sends that finish far apart because few were asked for say nothing of how fast slots free
    # up: then the send time per slot is the estimate.
    import router.pipeline.concurrency as concurrency

    clock = _Clock()
    monkeypatch.setattr(concurrency.time, "monotonic", clock)
    channel = concurrency._Channel(limit=4, handlers=64)
    for _ in range(3):
        clock.now += 30.0  # one send every 30 s
        channel.sent(0.008)
    assert channel.interval == pytest.approx(30.0)
    assert channel.per_slot() == pytest.approx(0.002)


def test_a_channel_that_slows_down_is_seen_at_its_new_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    import router.pipeline.concurrency as concurrency

    clock = _Clock()
    monkeypatch.setattr(concurrency.time, "monotonic", clock)
    channel = concurrency._Channel(limit=2, handlers=8)
    for _ in range(100):  # fast: a send every millisecond
        clock.now += 0.001
        channel.sent(0.002)
    for _ in range(6):  # then each send takes 2 s, two at a time
        clock.now += 1.0
        channel.sent(2.0)
    assert channel.per_slot() == pytest.approx(1.0, rel=0.05)
    assert not channel.turn_is_near()
