"""The collector's tuning for a long-running router (router/app/gc_tuning.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from router.app import gc_tuning


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_freezes_start_up_and_spaces_out_young_collections(restored_collector: None) -> None:
    gc_tuning.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == gc_tuning.YOUNG_THRESHOLD


def test_cyclic_garbage_is_still_collected_once_it_reaches_the_threshold(restored_collector: None) -> None:
    gc_tuning.settle()
    first = Node()
    first.other = Node()
    first.other.other = first
    watch = weakref.ref(first)
    del first
    # Cycles never count down: once this many more garbage objects were made, a young collection ran.
    for _ in range(gc_tuning.YOUNG_THRESHOLD):
        cycle = Node()
        cycle.other = cycle
    del cycle
    assert watch() is None
