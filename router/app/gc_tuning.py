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

YOUNG_THRESHOLD = 50_000
"""Net allocations (allocated minus freed) between young collections; CPython's default is 700.

A young collection scans the objects allocated since the last one that are still alive, and
under load those are the events in flight and, with the activity history on, the records
waiting for the next batch: at 10,000 the router collected every few hundred events and spent
11-16 us per event in the collector with the history off and 25-28 with it on (gc callbacks
timing each collection, 20,000 events through bench/bench_intake.py's set-up; bench/README
section 9). Those objects die within a second, freeing counts down, so at 50,000 a steady flow
never reaches the threshold. Only cyclic garbage does not count down: at most 50,000 such objects
(some MB) wait for a collection."""


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
