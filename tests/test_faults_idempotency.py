"""Delivery leases and idempotency keys: the pieces that narrow the at-least-once window.

The lease contract runs on both state stores (the fixtures of tests/test_state_contract.py);
the stage and the webhook header run in-process.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.channels.webhook import IDEMPOTENCY_HEADER, WebhookChannel, WebhookConfig
from router.channels.webhook import IDEMPOTENCY_META as WEBHOOK_META
from router.core.delivery import Delivery
from router.core.message import Message, Outcome
from router.pipeline.idempotency import ALREADY_SENT, IDEMPOTENCY_META, SkipIfSent, idempotency_key
from router.state import StateStore, open_state_store
from tests.builders import make_event
from tests.fakes.http_sink import HttpSink
from tests.test_state_contract import FakeClock, clock, new_store, store  # noqa: F401 - fixtures

# --------------------------------------------------------------------------- the lease contract


async def test_claim_delivery_leases_to_one_owner_until_sent(store: StateStore, clock: FakeClock) -> None:  # noqa: F811
    assert (await store.claim_delivery("d", "a", 10)).status == "claimed"
    assert (await store.claim_delivery("d", "a", 10)).status == "claimed"  # the holder may renew
    held = await store.claim_delivery("d", "b", 10)
    assert held.status == "held" and held.wait == pytest.approx(10)
    clock.advance(4)
    assert (await store.claim_delivery("d", "b", 10)).wait == pytest.approx(6)
    await store.mark_sent("d", 60)
    assert (await store.claim_delivery("d", "b", 10)).status == "sent"  # the ledger answers first
    assert (await store.claim_delivery("other", "b", 10)).status == "claimed"
    assert not await store.is_sent("other"), "a lease is not a sent record"


async def test_a_lease_expires_and_only_its_owner_releases_it(store: StateStore, clock: FakeClock) -> None:  # noqa: F811
    await store.claim_delivery("d", "a", 10)
    await store.release_delivery("d", "b")  # not b's to release
    assert (await store.claim_delivery("d", "b", 10)).status == "held"
    await store.release_delivery("d", "a")
    assert (await store.claim_delivery("d", "b", 10)).status == "claimed"
    clock.advance(10.5)  # b's attempt died without releasing: its lease runs out
    assert (await store.claim_delivery("d", "c", 10)).status == "claimed"


async def test_claim_delivery_has_one_winner_across_connections(new_store) -> None:  # noqa: F811
    one, two = await new_store(), await new_store()
    results = await asyncio.gather(
        *((one if i % 2 else two).claim_delivery("race", f"owner-{i}", 30) for i in range(20))
    )
    assert sum(r.status == "claimed" for r in results) == 1


# --------------------------------------------------------------------------- the stage


def delivery(attempt: int = 1) -> Delivery:
    event = make_event(type="t.x", id="e1", source="s", time=datetime.now(UTC))
    message = Message("t", "b", {"event_id": "e1"})
    return Delivery(event=event, rule="r", channel="hook", channel_type="webhook", message=message, attempt=attempt)


@pytest.fixture
async def sqlite_state(tmp_path: Path):
    state = open_state_store(f"sqlite:///{tmp_path / 's.db'}")
    await state.open()
    yield state
    await state.close()


class SlowReceiver:
    """A terminal stage that takes a while to send and records the messages it got; marks sent like Resolve."""

    def __init__(self, state: StateStore, outcome: Outcome | None = None) -> None:
        self.state = state
        self.outcome = outcome or Outcome.sent()
        self.sent: list[Message] = []
        self.release = asyncio.Event()

    async def __call__(self, d: Delivery) -> Outcome:
        self.sent.append(d.message)
        await self.release.wait()
        if self.outcome.ok:
            await self.state.mark_sent(d.key, 60)
        return self.outcome


async def test_an_overlapping_attempt_waits_for_the_first_and_then_skips(sqlite_state: StateStore) -> None:
    stage = SkipIfSent(sqlite_state, lease=10)
    receiver = SlowReceiver(sqlite_state)
    first = asyncio.create_task(stage(delivery(), receiver))
    while not receiver.sent:
        await asyncio.sleep(0.01)
    # The broker redelivers the event while the first attempt is still sending.
    second = asyncio.create_task(stage(delivery(), receiver))
    await asyncio.sleep(0.2)
    assert not second.done() and len(receiver.sent) == 1, "the second attempt sent while the first was in flight"
    receiver.release.set()
    assert (await first).ok
    outcome = await second
    assert outcome.status == "skipped" and outcome.reason == ALREADY_SENT
    assert len(receiver.sent) == 1


async def test_without_leases_an_overlapping_attempt_sends_again(sqlite_state: StateStore) -> None:
    """What the lease closes: with it off (ROUTER_DELIVERY_LEASE=0), only the ledger guards."""
    stage = SkipIfSent(sqlite_state, lease=0)
    receiver = SlowReceiver(sqlite_state)
    first = asyncio.create_task(stage(delivery(), receiver))
    second = asyncio.create_task(stage(delivery(), receiver))
    while len(receiver.sent) < 2:
        await asyncio.sleep(0.01)
    receiver.release.set()
    await asyncio.gather(first, second)
    assert len(receiver.sent) == 2
    assert receiver.sent[0].meta[IDEMPOTENCY_META] == receiver.sent[1].meta[IDEMPOTENCY_META]


async def test_an_attempt_that_did_not_send_lets_the_next_go_at_once(sqlite_state: StateStore) -> None:
    stage = SkipIfSent(sqlite_state, lease=30)
    failing = SlowReceiver(sqlite_state, Outcome.retryable("503"))
    failing.release.set()
    assert (await stage(delivery(), failing)).status == "retry"
    ok = SlowReceiver(sqlite_state)
    ok.release.set()
    async with asyncio.timeout(5):  # far less than the 30 s lease: it was released
        assert (await stage(delivery(attempt=2), ok)).ok


async def test_the_idempotency_key_is_the_same_on_every_attempt(sqlite_state: StateStore) -> None:
    stage = SkipIfSent(sqlite_state)
    seen: list[Message] = []

    async def refuse(d: Delivery) -> Outcome:
        seen.append(d.message)
        return Outcome.retryable("503")

    await stage(delivery(1), refuse)
    await stage(delivery(2), refuse)
    assert all(m.meta["event_id"] == "e1" for m in seen), "the rest of the meta goes through"
    keys = {m.meta[IDEMPOTENCY_META] for m in seen}
    # Keyed by the event's source and id together (CloudEvents' uniqueness), then rule and channel.
    assert keys == {idempotency_key('["s","e1"]:r:hook')}
    assert len(next(iter(keys))) == 32


# --------------------------------------------------------------------------- the webhook header


async def test_webhook_sends_the_idempotency_key_header() -> None:
    assert WEBHOOK_META == IDEMPOTENCY_META
    key = idempotency_key("e1:r:hook")
    async with HttpSink() as sink:
        plain = WebhookChannel("hook", WebhookConfig(type="webhook", url=sink.url))
        own = WebhookChannel("own", WebhookConfig(type="webhook", url=sink.url, headers={"idempotency-key": "mine"}))
        try:
            assert (await plain.send(Message("t", "b", {IDEMPOTENCY_META: key}))).ok
            assert (await plain.send(Message("t", "b"))).ok  # e.g. `router send`: no key, no header
            assert (await own.send(Message("t", "b", {IDEMPOTENCY_META: key}))).ok
        finally:
            await plain.aclose()
            await own.aclose()
        keyed, unkeyed, configured = sink.requests
    assert keyed.headers[IDEMPOTENCY_HEADER.lower()] == key
    assert keyed.json()["meta"][IDEMPOTENCY_META] == key
    assert IDEMPOTENCY_HEADER.lower() not in unkeyed.headers
    assert configured.headers[IDEMPOTENCY_HEADER.lower()] == "mine", "a configured header wins"
