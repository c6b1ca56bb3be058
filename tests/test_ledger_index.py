"""The in-memory index of the SQLite sent ledger: it may say "maybe" to anything, but never
"not sent" for a key the ledger holds."""

from __future__ import annotations

import uuid

import pytest

from router.state import ledger_index
from router.state.ledger_index import LedgerIndex


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def keys(count: int) -> list[str]:
    return [f"{uuid.uuid4().hex}:rule-{i % 7}:channel" for i in range(count)]


def loaded(clock: Clock | None = None, **options: float) -> LedgerIndex:
    index = LedgerIndex(clock=clock or Clock(), **options)
    index.finish_loading()
    return index


def test_every_key_added_is_a_maybe_and_most_others_are_ruled_out() -> None:
    clock = Clock()
    index = loaded(clock)
    added, others = keys(150_000), keys(50_000)  # past the first filter's capacity: it grows
    for key in added:
        index.add(key, clock.now + 3600)
    assert all(index.may_contain(key) for key in added)
    false_positives = sum(index.may_contain(key) for key in others)
    assert false_positives / len(others) < 0.02
    assert index.nbytes < 3 * len(added)  # filters are sized in powers of two: 1.2 to 2.5 bytes a key


def test_before_loading_finishes_and_once_off_everything_is_a_maybe() -> None:
    index = LedgerIndex(clock=Clock())
    assert index.may_contain("anything")
    index.finish_loading()
    assert not index.may_contain("anything")
    index.turn_off("testing")
    assert index.may_contain("anything") and index.why_off == "testing"


def test_filters_whose_keys_all_expired_are_dropped() -> None:
    clock = Clock()
    index = loaded(clock, rotate_every=10)
    old = keys(1000)
    for key in old:
        index.add(key, clock.now + 5)
    clock.now += 20  # the old keys have left the ledger, and the next add opens a new filter
    index.add("new", clock.now + 5)
    assert index.may_contain("new")
    assert sum(index.may_contain(key) for key in old) < 50  # only false positives of the new filter
    assert len(index) == 1


def test_a_filter_still_holding_live_keys_is_kept_across_rotations() -> None:
    clock = Clock()
    index = loaded(clock, rotate_every=10)
    index.add("long-lived", clock.now + 1000)
    for step in range(5):
        clock.now += 11
        index.add(f"later-{step}", clock.now + 1)
    assert index.may_contain("long-lived")


def test_the_index_turns_itself_off_past_its_memory_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_index, "MAX_BYTES", 200_000)
    clock = Clock()
    index = loaded(clock)
    for key in keys(200_000):
        index.add(key, clock.now + 60)
    assert index.off and "exceed" in index.why_off
    assert index.may_contain("never added")  # the database answers from now on
    assert index.nbytes == 0
