"""Dead-letter queue management behind `router dlq list | replay | purge`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from router.core.errors import DecodeError
from router.core.records import ForgedRecord, RetryRecord
from router.transports.base import H_CONTENT_TYPE, H_KIND, H_ROUTING_KEY, DeadLetter, Transport


async def replay(transport: Transport, ids: Sequence[str] | None) -> list[DeadLetter]:
    """Send dead letters back through the router, each with a fresh set of attempts.

    An event (poison, render failure) is published again with its original routing key; a
    delivery or job goes back as a retry that runs at once, starting again at attempt 1.

    A delivery or job whose record does not verify (router/core/signing.py: forged, or signed
    with a key no longer held) is never replayed: :class:`ForgedRecord` naming the letter is
    raised and it stays in the queue (letters replayed before it are gone from it).
    """

    async def republish(letter: DeadLetter) -> None:
        kind = str(letter.headers.get(H_KIND, "event"))
        if letter.reason == "forged":
            raise ForgedRecord(f"dead letter {letter.id} not replayed: it was refused as forged ({letter.error})")
        if kind in ("delivery", "job", "retry"):  # "retry": a record kept as it came
            try:
                record = RetryRecord.from_bytes(letter.body)
            except ForgedRecord as error:
                raise ForgedRecord(f"dead letter {letter.id} not replayed: {error}") from None
            except DecodeError:
                record = None
            if record is not None:
                record.attempt = 0
                headers = {k: v for k, v in letter.headers.items() if k == H_KIND or not k.startswith("x-router-")}
                await transport.schedule_retry(record.to_bytes(), delay=0.0, headers=headers)
                return
        routing_key = str(letter.headers.get(H_ROUTING_KEY) or "replayed")
        content_type = str(letter.headers.get(H_CONTENT_TYPE) or "") or None
        headers = {k: v for k, v in letter.headers.items() if not str(k).startswith("x-router-")}
        await transport.publish_event(letter.body, routing_key=routing_key, headers=headers, content_type=content_type)

    return await transport.dlq_replay(ids, republish)


def letter_as_dict(letter: DeadLetter, *, include_body: bool = False) -> dict[str, Any]:
    """A dead letter as JSON-ready data (`router dlq list --json`)."""
    data = dataclasses.asdict(letter)
    body = data.pop("body")
    data["headers"] = {k: v for k, v in letter.headers.items()}
    if include_body:
        data["body"] = body.decode("utf-8", errors="replace")
    data["size"] = len(body)
    return data


LIST_COLUMNS = ("ID", "DEAD AT (UTC)", "REASON", "RULE/CHANNEL", "EVENT", "ATTEMPTS", "ERROR")


def letter_row(letter: DeadLetter) -> tuple[str, ...]:
    """One dead letter as the cells of a `router dlq list` line, in :data:`LIST_COLUMNS` order."""
    from datetime import UTC, datetime

    dead_at = "-"
    if letter.dead_at is not None:
        dead_at = datetime.fromtimestamp(letter.dead_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    target = "/".join(x for x in (letter.rule, letter.channel) if x) or "-"
    # One line per letter: an error from a remote service may carry line breaks.
    error = " ".join(letter.error.split()) or "-"
    return (letter.id, dead_at, letter.reason, target, letter.event_id or "-", str(letter.attempts), error)


def format_letters(letters: Sequence[DeadLetter]) -> list[str]:
    """`router dlq list`: a header and one aligned line per letter (the error, last, is not padded)."""
    rows = [LIST_COLUMNS, *(letter_row(letter) for letter in letters)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]) for row in rows
    ]


REPLAY_SCAN = 100_000  # dead letters looked through per replay: a bounded cost


async def replay_events(
    transport: Transport, event_ids: Sequence[str], progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Replay the dead letters of ``event_ids`` (`router replay`, ``POST /api/replay``).

    Only what did not succeed is in the dead-letter queue, so only that runs again: a dead
    delivery goes back as its retry record, a dead job or refused event as itself.
    """
    wanted = set(event_ids)
    letters = await transport.dlq_list(REPLAY_SCAN)
    ids = [letter.id for letter in letters if letter.event_id in wanted]
    found = {letter.event_id for letter in letters if letter.event_id in wanted}
    replayed: list[DeadLetter] = []
    for start in range(0, len(ids), 100):  # in chunks, so that a long run shows progress
        replayed += await replay(transport, ids[start : start + 100])
        if progress is not None:
            progress(len(replayed), len(ids))
    return {"replayed": len(replayed), "letters": len(ids), "skipped": len(wanted - found)}
