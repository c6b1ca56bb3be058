"""The per-channel send limit: never more than its size at once, first come first served, and
no slot lost when a waiting send is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from router.support.slots import Slots


async def test_never_more_than_its_size_and_waiters_go_in_arrival_order() -> None:
    slots = Slots(2)
    inside = 0
    most = 0
    order: list[int] = []
    gate = asyncio.Event()

    async def send(number: int) -> None:
        nonlocal inside, most
        async with slots:
            inside += 1
            most = max(most, inside)
            order.append(number)
            await gate.wait()
            inside -= 1

    tasks = [asyncio.create_task(send(number)) for number in range(10)]
    while len(order) < 2:
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert most == 2
    assert order == list(range(10))
    assert slots.free == 2


async def test_a_cancelled_waiter_gives_up_its_place_without_losing_a_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    slots.release()
    assert slots.free == 1


async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # `second` got it instead
    slots.release()
    assert slots.free == 1


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


async def test_acquire_first_is_served_before_earlier_plain_waiters_in_its_own_order() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str, first: bool) -> None:
        await (slots.acquire_first() if first else slots.acquire())
        order.append(name)
        slots.release()

    tasks = [
        asyncio.create_task(take(name, name.startswith("back"))) for name in ("new-1", "back-1", "new-2", "back-2")
    ]
    await asyncio.sleep(0)
    assert slots.waiting == 4 and slots.waiting_first == 2
    slots.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == ["back-1", "back-2", "new-1", "new-2"]
    assert slots.free == 1
