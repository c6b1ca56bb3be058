"""Short stories: which attempts of a batch are kept in their event's row, and their tallies.

Most events tell a short story: their rules fired and every channel sent on the first attempt,
all recorded within one batch. Written as rows, that story cost an event row, a verdict row and
an attempt row per channel; rows were most of the store's cost (bench/README section 9). Such an
event keeps its attempts as JSON in its own row (``activity_events.story``); the per-channel
statistics read their counts and send durations from ``activity_tallies``, one row per second,
channel and batch. Verdicts stay rows in every case: the ``rule`` filter finds events through
their index.

Every other attempt stays a row of its table, as before: those of an event with a skipped
verdict, a failed or retried attempt, a dry run or a job; any record of an event that arrived
in an earlier batch (or on another router); and the records of an event whose row was already
in the store (a redelivery). So dead letters, the 429 pause and the last error, which only
failed attempts carry, never need the stories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.activity.records import REJECTED, summarise
from router.support import fast_json

if TYPE_CHECKING:
    from router.activity.store import Batch

# Positions in the store's rows (``Batch``): the event id first, then ``at``.
EVENT_OUTCOME = 9
VERDICT_RULE, VERDICT_VERDICT = 2, 3
ATTEMPT_RULE, ATTEMPT_CHANNEL, ATTEMPT_TYPE, ATTEMPT_DURATION, ATTEMPT_OUTCOME, ATTEMPT_ERROR = 2, 3, 4, 8, 9, 13
JOB_RULE, JOB_OUTCOME = 2, 4
_NO_RECORDS: tuple[list[Any], list[Any], list[Any]] = ([], [], [])


@dataclass
class Arranged:
    """A batch as the store writes it: event rows (with their summary and story), table rows, tallies."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    verdicts: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: list[tuple[Any, ...]] = field(default_factory=list)
    tallies: list[tuple[Any, ...]] = field(default_factory=list)


def arrange(batch: Batch, known: set[str]) -> Arranged:
    """Summarise each arriving event from the batch and keep the short stories of events not ``known`` inline.

    An event's row gets its outcome, channels, rules fired and failed flag from this batch's
    records (the store recomputes those of events with records elsewhere), and, for a short
    story, the story itself; the other records become table rows.
    """
    groups: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    for row in batch.verdicts:
        groups.setdefault(row[0], ([], [], []))[0].append(row)
    for row in batch.attempts:
        groups.setdefault(row[0], ([], [], []))[1].append(row)
    for row in batch.jobs:
        groups.setdefault(row[0], ([], [], []))[2].append(row)
    result = Arranged()
    short: set[str] = set()
    for row in batch.events:
        event_id = row[0]
        if row[EVENT_OUTCOME] == REJECTED:  # its outcome is final: nothing was routed
            result.events.append((*row[:11], "{}", "[]", 0, *row[11:14], None))
            continue
        verdicts, attempts, jobs = groups.get(event_id, _NO_RECORDS)
        fired = list(dict.fromkeys(v[VERDICT_RULE] for v in verdicts if v[VERDICT_VERDICT] == "fired"))
        story: str | None = None
        if (
            event_id not in known
            and not jobs
            and all(v[VERDICT_VERDICT] == "fired" for v in verdicts)
            and all(a[ATTEMPT_OUTCOME] == "sent" for a in attempts)
        ):
            # What summarise() gives for such a story, without its cost per event.
            channels: dict[str, str] = dict.fromkeys((a[ATTEMPT_CHANNEL] for a in attempts), "sent")
            outcome, failed = ("sent" if attempts else "skipped"), False
            if attempts:
                short.add(event_id)
                story = fast_json.dumps([a[1:] for a in attempts])
        else:
            ordered = sorted(attempts, key=_at)  # by start: a deferral can be recorded after its retry
            outcome, channels, failed = summarise(
                [(a[ATTEMPT_RULE], a[ATTEMPT_CHANNEL], a[ATTEMPT_OUTCOME], a[ATTEMPT_ERROR]) for a in ordered],
                fired,
                [(v[VERDICT_RULE], v[VERDICT_VERDICT]) for v in verdicts],
                [(j[JOB_RULE], j[JOB_OUTCOME]) for j in jobs],
            )
        result.events.append(
            (
                *row[:9],
                outcome,
                row[10],
                fast_json.dumps(channels),
                fast_json.dumps(fired),
                int(failed),
                *row[11:14],
                story,
            )
        )
    result.verdicts = batch.verdicts
    result.attempts = [row for row in batch.attempts if row[0] not in short]
    result.jobs = batch.jobs  # a story with a job is never short
    result.tallies = _tallies(groups, short)
    return result


def _tallies(groups: dict[str, tuple[list[Any], list[Any], list[Any]]], short: set[str]) -> list[tuple[Any, ...]]:
    """Per second and channel of the short stories' sends: (first at, channel, type, count, last at, durations)."""
    channels: dict[tuple[int, str], list[Any]] = {}
    for event_id in short:
        for a in groups[event_id][1]:
            at = a[1]
            tally = channels.setdefault((int(at), a[ATTEMPT_CHANNEL]), [at, 0, at, [], a[ATTEMPT_TYPE]])
            tally[0], tally[1], tally[2] = min(tally[0], at), tally[1] + 1, max(tally[2], at)
            tally[3].append(a[ATTEMPT_DURATION])
    return [
        (first, channel, channel_type, count, last, fast_json.dumps(durations))
        for (_, channel), (first, count, last, durations, channel_type) in channels.items()
    ]


def _at(row: tuple[Any, ...]) -> float:
    return float(row[1])


def unpack(event_id: str, story: str | None) -> list[tuple[Any, ...]]:
    """A short story's attempts, shaped as rows of the attempts table (without their ids)."""
    if not story:
        return []
    return [(event_id, *row) for row in json.loads(story)]
