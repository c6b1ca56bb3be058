"""The cyclic garbage collector, tuned for a long-running router.

A router's heap is mostly what start-up built and never frees (compiled templates, the rule
index, plugins, apprise's tables), while each event allocates a few hundred short-lived
containers. With CPython's defaults (a young collection every 700 allocations) the collector
ran every couple of events and, through the older generations, kept walking the start-up heap:
15-20% of the router's own CPU per event (bench/profile_engine.py). So once the router is
built, :func:`settle` collects, moves the survivors out of the collector's sight
(``gc.freeze``) and makes young collections rarer. Objects still die by reference counting as
usual; only cycles wait for the collector.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default is 700): a 10,000-object young
generation is a few MB at most, and scanning it costs the same per object as before."""


def settle() -> None:
    """Collect, then freeze what start-up built and space out young collections (once, before serving)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def thaw() -> None:
    """Hand the frozen start-up heap back to the collector (after a reload replaced part of it).

    Frozen objects are never examined, so cycles among them would never be freed: the
    configuration a reload replaces must become collectable again.
    """
    gc.unfreeze()
