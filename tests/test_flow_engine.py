"""Flow control end to end on the in-process router (embedded queue and SQLite state, both real)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from router.core.records import RetryRecord
from router.runtime.runtime import build_runtime
from tests.builders import make_event
from tests.engine_support import Harness, start_harness, until
from tests.flow_support import TEMPLATES, TimedChannel, bodies, event, flow_registry, got, rules_yaml

Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture(autouse=True)
def _reset() -> None:
    TimedChannel.reset()


@pytest.fixture
async def harness_factory(tmp_path: Path) -> AsyncIterator[Factory]:
    open_ones: list[Harness] = []

    async def make(config: str, templates: dict[str, str] | None = None, **kwargs: object) -> Harness:
        harness = await start_harness(
            tmp_path,
            config,
            templates or TEMPLATES,
            **{"registry": flow_registry(), **kwargs},  # type: ignore[arg-type]
        )
        open_ones.append(harness)
        return harness

    yield make
    for harness in open_ones:
        if harness.transport.connected:
            await harness.close()


def flow(h: Harness, rule: str, decision: str) -> float:
    return h.metrics.flow.labels(rule, decision)._value.get()


def rule(name: str, on: str, extra: str, template: str = "one", channel: str = "a") -> str:
    return f"  - {{name: {name}, on: {on}, template: {template}, channels: [{channel}], {extra}}}\n"


A = "  a: {type: timed}"


# dedupe


async def test_dedupe_skips_repeated_keys_counts_them_and_lets_a_redelivery_through(harness_factory: Factory) -> None:
    h = await harness_factory(rules_yaml(A, rule("once", "'**'", "dedupe: {key: '{{ data.user }}', window: 1h}")))
    await h.publish(event("t", "e1", user="ada", n=1))
    await h.publish(event("t", "e2", user="ada", n=2))
    await h.publish(event("t", "e3", user="lin", n=3))
    await until(lambda: len(got("a")) == 2 and flow(h, "once", "skipped") == 1)
    assert sorted(bodies("a")) == ["n=1", "n=3"]
    # The event that claimed the key comes again (a redelivery): not its own duplicate, and
    # the sent ledger keeps it from being sent twice.
    await h.publish(event("t", "e1", user="ada", n=1))
    await until(lambda: h.metrics.deliveries.labels("a", "skipped")._value.get() == 1)
    assert flow(h, "once", "skipped") == 1 and len(got("a")) == 2


async def test_dedupe_holds_across_a_restart(harness_factory: Factory) -> None:
    config = rules_yaml(A, rule("once", "'**'", "dedupe: {key: '{{ data.user }}', window: 1h}"))
    first = await harness_factory(config)
    await first.publish(event("t", "e1", user="ada", n=1))
    await until(lambda: len(got("a")) == 1)
    await first.close()
    second = await harness_factory(config)
    await second.publish(event("t", "e2", user="ada", n=2))
    await second.publish(event("t", "e3", user="lin", n=3))
    await until(lambda: flow(second, "once", "skipped") == 1 and len(got("a")) == 2)
    assert bodies("a") == ["n=1", "n=3"]


# rate_limit


async def test_rate_limit_drops_the_excess_and_counts_it(harness_factory: Factory) -> None:
    h = await harness_factory(rules_yaml(A, rule("capped", "'**'", "rate_limit: {limit: 3, period: 1h}")))
    for i in range(10):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: flow(h, "capped", "dropped") == 7)
    await until(lambda: h.metrics.in_flight._value.get() == 0 and len(got("a")) == 3)
    assert len(got("a")) == 3


async def test_rate_limit_is_per_key(harness_factory: Factory) -> None:
    spec = "rate_limit: {limit: 1, period: 1h, key: '{{ data.user }}'}"
    h = await harness_factory(rules_yaml(A, rule("capped", "'**'", spec)))
    for i, user in enumerate(["ada", "ada", "lin", "lin", "bo"]):
        await h.publish(event("t", f"e{i}", user=user, n=i))
    await until(lambda: flow(h, "capped", "dropped") == 2 and len(got("a")) == 3)
    assert sorted(bodies("a")) == ["n=0", "n=2", "n=4"]


# throttle


async def test_throttle_delays_without_loss_and_keeps_per_key_order(harness_factory: Factory) -> None:
    spec = "throttle: {limit: 10, period: 1s, burst: 1, key: '{{ data.user }}'}"
    h = await harness_factory(rules_yaml(A, rule("slow", "'**'", spec)))
    h.engine.flow.hold = 0.3  # most waits go through durable records, not the process
    started = time.monotonic()
    for i in range(12):
        await h.publish(event("t", f"ada-{i}", user="ada", n=i))
    for i in range(3):
        await h.publish(event("t", f"lin-{i}", user="lin", n=100 + i))
    await until(lambda: len(got("a")) == 15)
    ada = [r for r in got("a") if r.message.meta["event_id"].startswith("ada")]
    lin = [r for r in got("a") if r.message.meta["event_id"].startswith("lin")]
    assert [r.message.body for r in ada] == [f"n={i}" for i in range(12)]
    assert [r.message.body for r in lin] == [f"n={100 + i}" for i in range(3)]
    # One slot per 0.1s: the i-th send never goes before slot i. A send may run late on a
    # loaded machine and the next catch up, so gaps between sends are not the promise.
    early = [r.at - started - i * 0.1 for i, r in enumerate(ada)]
    assert min(early) >= -0.02, early
    assert ada[-1].at - started >= 1.05
    assert lin[0].at < ada[-1].at - 0.5, "another key does not wait behind ada's backlog"
    assert flow(h, "slow", "delayed") == 11 + 2
    assert h.metrics.retries_scheduled.labels("job:notify")._value.get() == 0  # waiting is not a failure


# digest


DIGEST = "digest: {window: 500ms, max_events: 100, key: '{{ data.space }}'}"


async def test_digest_delivers_one_message_per_key_with_events_and_count(harness_factory: Factory) -> None:
    h = await harness_factory(rules_yaml(A, rule("sum", "'**'", DIGEST, template="many")))
    await h.engine.flow.flusher.close()  # a slow machine must not see the window close mid-publish
    for i in range(5):
        await h.publish(event("t", f"s1-{i}", space="s1", n=i))
    for i in range(2):
        await h.publish(event("t", f"s2-{i}", space="s2", n=10 + i))
    await until(lambda: flow(h, "sum", "collected") == 7)
    await h.engine.flow.flusher.start()
    await until(lambda: len(got("a")) == 2)
    by_title = {r.message.title: r for r in got("a")}
    assert set(by_title) == {"5 events", "2 events"}
    assert sorted(by_title["5 events"].message.body.split(",")) == ["0", "1", "2", "3", "4"]
    assert sorted(by_title["5 events"].event_ids) == [f"s1-{i}" for i in range(5)]
    assert flow(h, "sum", "collected") == 7
    # Counted once the batch is dropped from the bucket, which may be just after its delivery.
    await until(lambda: h.metrics.digests_flushed.labels("digest")._value.get() == 2)


async def test_digest_reaching_max_events_goes_out_before_its_window(harness_factory: Factory) -> None:
    spec = "digest: {window: 1h, max_events: 3}"
    h = await harness_factory(rules_yaml(A, rule("sum", "'**'", spec, template="many")))
    for i in range(7):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: len(got("a")) == 2 and flow(h, "sum", "collected") == 7)
    assert [r.message.title for r in got("a")] == ["3 events", "3 events"]
    assert await h.engine.flow.flusher.flush_due() == 0  # the seventh waits for its window
    assert len(await h.state.digest_peek("rule:sum:")) == 1


async def test_digest_open_at_a_restart_is_delivered_once_after_it(harness_factory: Factory) -> None:
    config = rules_yaml(A, rule("sum", "'**'", "digest: {window: 1s, max_events: 100}", template="many"))
    first = await harness_factory(config)
    await first.engine.flow.flusher.close()  # however slow this machine, it restarts before flushing
    for i in range(3):
        await first.publish(event("t", f"e{i}", n=i))
    await until(lambda: flow(first, "sum", "collected") == 3)
    await first.close()
    assert got("a") == []
    second = await harness_factory(config)
    await until(lambda: len(got("a")) == 1)
    [message] = got("a")
    assert message.message.title == "3 events" and sorted(message.event_ids) == ["e0", "e1", "e2"]
    assert await second.engine.flow.flusher.flush_due() == 0
    assert len(got("a")) == 1


async def test_digest_survives_a_configuration_reload(harness_factory: Factory, tmp_path: Path) -> None:
    config = rules_yaml(A, rule("sum", "'**'", "digest: {window: 1s, max_events: 100}", template="many"))
    h = await harness_factory(config)
    await h.engine.flow.flusher.close()  # a slow machine must not see the window close mid-test
    await h.publish(event("t", "e0", n=0))
    await h.publish(event("t", "e1", n=1))
    await until(lambda: flow(h, "sum", "collected") == 2)
    (tmp_path / "templates" / "many.j2").write_text("{% block title %}{{ count }} reloaded{% endblock %}x")
    await h.engine.swap(build_runtime(tmp_path / "rules.yaml", flow_registry()))
    await h.publish(event("t", "e2", n=2))
    await until(lambda: flow(h, "sum", "collected") == 3)
    await h.engine.flow.flusher.start()
    await until(lambda: len(got("a")) == 1)
    assert got("a")[0].message.title == "3 reloaded"


async def test_digest_that_fails_to_render_is_dead_lettered_whole(harness_factory: Factory) -> None:
    templates = {**TEMPLATES, "bad.j2": "{{ events[0].data.missing.deeper }}"}
    config = rules_yaml(A, rule("sum", "'**'", "digest: {window: 200ms, max_events: 10}", template="bad"))
    h = await harness_factory(config, templates)
    for i in range(3):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: h.metrics.dead_letters.labels("render")._value.get() == 1)
    [letter] = await h.transport.dlq_list()
    record = RetryRecord.from_bytes(letter.body)
    assert letter.headers["x-router-kind"] == "job"
    assert sorted(e.id for e in record.events) == ["e0", "e1", "e2"]


async def test_a_key_that_does_not_render_is_dead_lettered(harness_factory: Factory) -> None:
    h = await harness_factory(rules_yaml(A, rule("once", "'**'", "dedupe: {key: '{{ data.nope }}', window: 1h}")))
    await h.publish(event("t", "e1", n=1))
    await until(lambda: h.metrics.dead_letters.labels("render")._value.get() == 1)
    [letter] = await h.transport.dlq_list()
    assert "nope" in letter.error


# crash safety and retries


class DropFailsOnce:
    """The state store, except that the first ``digest_drop`` fails: the flusher "crashes"
    after scheduling a batch and before removing it."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.failed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def digest_drop(self, *args: object) -> int:
        if not self.failed:
            self.failed = True
            raise ConnectionError("gone")
        return await self._store.digest_drop(*args)  # type: ignore[attr-defined, no-any-return]


async def test_a_flush_interrupted_after_scheduling_delivers_the_batch_once(harness_factory: Factory) -> None:
    h = await harness_factory(rules_yaml(A, rule("sum", "'**'", "digest: {window: 1h, max_events: 100}", "many")))
    flusher = h.engine.flow.flusher
    await flusher.close()  # flush by hand only
    for i in range(3):
        await h.publish(event("t", f"e{i}", n=i))
    await until(lambda: flow(h, "sum", "collected") == 3)
    real = flusher.state
    flusher.state = DropFailsOnce(real)  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await flusher.flush("rule:sum:")
    await h.publish(event("t", "e3", n=3))  # arrives between the crash and the next attempt
    await until(lambda: flow(h, "sum", "collected") == 4)
    assert await flusher.flush("rule:sum:") == 1  # the same three again: the claim fixed the batch
    await until(lambda: len(got("a")) == 1 and h.metrics.deliveries.labels("a", "skipped")._value.get() == 1)
    assert sorted(got("a")[0].event_ids) == ["e0", "e1", "e2"], "scheduled twice, delivered once"
    assert len(await real.digest_peek("rule:sum:")) == 1  # e3 waits in a bucket of its own


FLAKY_CALLS: list[str] = []


async def test_a_job_retried_after_a_failure_is_not_charged_to_its_rate_limit_again(harness_factory: Factory) -> None:
    from router.jobs.base import Job, JobContext

    class Flaky(Job):
        name = "flaky"

        async def handle(self, ctx: JobContext) -> None:
            FLAKY_CALLS.append(ctx.event.id)
            if len(FLAKY_CALLS) == 1:
                raise RuntimeError("first time fails")

    registry = flow_registry()
    registry.jobs["flaky"] = Flaky
    FLAKY_CALLS.clear()
    rules = "  - {name: capped, on: '**', job: flaky, rate_limit: {limit: 1, period: 1h}}"
    h = await harness_factory(rules_yaml(A, rules), registry=registry)
    await h.publish(event("t", "e1", n=1))
    await until(lambda: FLAKY_CALLS == ["e1", "e1"])
    assert flow(h, "capped", "dropped") == 0


def test_a_job_record_carries_its_batch_and_how_far_flow_control_got() -> None:
    from datetime import UTC, datetime

    from router.flow.resume import Resume

    events = [
        make_event({"n": i}, type="t", id=f"e{i}", source="s", time=datetime(2024, 1, 1, tzinfo=UTC)) for i in range(3)
    ]
    record = Resume("admitted", events=tuple(events)).record(events[0], "sum", attempt=2, last_error="x")
    again = RetryRecord.from_bytes(record.to_bytes())
    assert again.events == events and Resume.from_record(again) == Resume("admitted", events=tuple(events))
    waiting = RetryRecord.from_bytes(Resume("waiting", slot=123.5).record(events[0], "slow", 0).to_bytes())
    assert Resume.from_record(waiting) == Resume("waiting", slot=123.5)
    plain = RetryRecord(kind="job", event=events[0], rule="r", attempt=1)
    assert Resume.from_record(RetryRecord.from_bytes(plain.to_bytes())) is None  # written before flow control


async def test_throttle_reservations_of_a_key_go_one_at_a_time_in_order() -> None:
    import asyncio

    from router.flow.throttle import KeyedLocks

    locks, order = KeyedLocks(), []

    async def take(n: int) -> None:
        async with locks.hold("k"):
            await asyncio.sleep(0)  # let the others queue up behind
            order.append(n)

    await asyncio.gather(*(take(n) for n in range(20)))
    assert order == list(range(20))
    assert locks._locks == {}, "no lock is kept for a key nobody uses"


class DueAlwaysFails:
    """The state store, except that ``digest_due`` fails every time (the store is away)."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def digest_due(self, *args: object) -> list[str]:
        self.calls += 1
        raise ConnectionError("gone")


async def test_a_store_away_for_many_flush_passes_is_one_warning_line(
    harness_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    h = await harness_factory(rules_yaml(A, rule("sum", "'**'", "digest: {window: 1h, max_events: 100}", "many")))
    flusher = h.engine.flow.flusher
    await flusher.close()
    failing = DueAlwaysFails(flusher.state)
    flusher.state = failing  # type: ignore[assignment]
    flusher.interval = 0.005  # many passes quickly; the line limit is per 10 s
    with caplog.at_level("WARNING", logger="router.flow"):
        await flusher.start()
        await until(lambda: failing.calls >= 30)
        await flusher.close()
    lines = [r for r in caplog.records if "flushing digests failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "ConnectionError" in lines[0].getMessage()
