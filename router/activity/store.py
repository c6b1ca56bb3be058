"""The activity store: one interface, SQL shared by the SQLite and PostgreSQL backends.

Every method runs in the recorder's (or the API's) own thread, never on the event loop. The
backends differ only in how they connect, their placeholders, ids, size and vacuum
(``sqlite_store.py``, ``postgres_store.py``); the queries are here, once.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.activity import inline
from router.activity.records import (
    OUTCOMES,
    REJECTED,
    channel_outcome,
    counts_template,
    iso,
    summarise,
)
from router.support import fast_json

MAX_LIMIT = 500
COUNT_CAP = 50_000  # a list's counts cover at most this many newest matching events: a bounded cost
COMMON_RULE = 20_000  # a rule filter with more verdicts than this walks the time index (list_events)
SUMMARY_CHUNK = 500  # events per summary query: under SQLite's oldest limit of 999 parameters
PERCENTILE_SAMPLE = 200_000  # latencies read per stats query from each of attempts and tallies, newest first


@dataclass
class Batch:
    """Rows to write in one transaction (see the table definitions in :meth:`SqlStore.schema`)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    verdicts: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: list[tuple[Any, ...]] = field(default_factory=list)

    def touched(self) -> set[str]:
        """The events whose summary (outcome, channels, rules fired) this batch may change."""
        ids = {row[0] for row in self.verdicts}
        ids.update(row[0] for row in self.attempts)
        ids.update(row[0] for row in self.jobs)
        return ids


@dataclass
class Filter:
    """The filters of ``router activity`` and ``GET /api/activity`` (all optional)."""

    since: float | None = None  # epoch
    until: float | None = None
    type: str | None = None  # '*' matches within a segment
    rule: str | None = None
    channel: str | None = None
    outcome: str | None = None
    q: str | None = None  # an event id, or a subject prefix
    limit: int = 50
    before: tuple[float, str] | None = None  # the cursor: (received_at, event_id) of the last row shown


class ActivityStore(ABC):
    """Where activity records live. Methods are synchronous: call them from one dedicated thread."""

    @abstractmethod
    def open(self) -> None:
        """Connect and create the tables if they are missing."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    def describe(self) -> str:
        """The store, safe to log (no password)."""

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction; raises when the store is unavailable."""

    @abstractmethod
    def prune(self, now: float, retention: float, max_bytes: int) -> int:
        """Delete records older than ``retention`` and, oldest first, until under ``max_bytes``; returns events deleted."""

    @abstractmethod
    def size_bytes(self) -> int:
        """The space the store takes."""

    @abstractmethod
    def list_events(self, flt: Filter) -> dict[str, Any]:
        """The ``GET /api/activity`` answer."""

    @abstractmethod
    def event_story(self, event_id: str) -> dict[str, Any] | None:
        """The ``GET /api/events/{id}`` answer (without ``not_matched`` verdicts), or None."""

    @abstractmethod
    def dead_letters(self, flt: Filter) -> list[dict[str, Any]]:
        """Deliveries whose latest attempt is dead."""

    @abstractmethod
    def rule_stats(self, since: float) -> list[dict[str, Any]]:
        """Per rule: matched, fired, skipped since ``since``, last fired."""

    @abstractmethod
    def channel_stats(self, since: float, now: float) -> list[dict[str, Any]]:
        """Per channel: send rate, success ratio, latency percentiles, pause after a 429, last error."""

    @abstractmethod
    def overview(self, now: float, window: float, step: float) -> list[dict[str, Any]]:
        """Time series over the last ``window`` seconds, one point per ``step``."""


TABLES = ("activity_events", "activity_verdicts", "activity_attempts", "activity_jobs", "activity_tallies")

_EVENT_COLUMNS = (
    "event_id, at, type, source, subject, transport, process, size, schema_verdict, outcome, envelope, "
    "channels, rules_fired, failed, reason, error, dead_letter_id, story"
)
_REPLACE_REJECTED = ", ".join(
    f"{column} = excluded.{column}" for column in (c.strip() for c in _EVENT_COLUMNS.split(",")) if column != "event_id"
)
# Columns added after the first release: added to an existing table when the store opens.
_ADDED_EVENT_COLUMNS = (("reason", "TEXT"), ("error", "TEXT"), ("dead_letter_id", "TEXT"), ("story", "TEXT"))
_VERDICT_COLUMNS = "event_id, at, rule, verdict, reason"
_ATTEMPT_COLUMNS = (
    "event_id, at, rule, channel, channel_type, idempotency_key, attempt, message, duration_ms, outcome, "
    "retry_at, status, error_class, error, dead_letter_id"
)
_JOB_COLUMNS = "event_id, at, rule, job, outcome, error"
_TALLY_COLUMNS = "at, channel, channel_type, count, last_at, durations"
_LIST_COLUMNS = (
    "event_id, at, type, source, subject, transport, size, schema_verdict, rules_fired, outcome, channels, "
    "reason, error, dead_letter_id"
)


class SqlStore(ActivityStore):
    """The queries, in SQL both SQLite and PostgreSQL run. Subclasses connect and adapt."""

    id_column = "INTEGER PRIMARY KEY"
    placeholder = "?"
    time_index_columns = "at, outcome, failed, event_id"
    not_indexed = ""  # put before a column to keep the planner off its index (SQLite: "+")
    # A rule filter matching few events looks them up by id: the subquery's rows, as SQL of the backend.
    by_ids = "event_id IN ({subquery})"

    def __init__(self) -> None:
        self.conn: Any = None

    # ----------------------------------------------------------------- dialect

    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _bucket(self) -> str:
        """SQL of the bucket number of ``at`` (parameters: start, step)."""
        return "CAST((at - ?) / ? AS INTEGER)"

    def _vacuum(self, *, shrink: bool) -> None:
        """Make deleted space reusable; with ``shrink``, give it back (the store is over max_bytes)."""

    def _create(self, cursor: Any) -> None:
        for statement in self.schema():
            cursor.execute(statement)
        # A store written by an earlier version lacks the rejection columns: add them (nullable).
        cursor.execute("SELECT * FROM activity_events WHERE 1 = 0")
        present = {column[0].lower() for column in cursor.description}
        cursor.fetchall()
        for name, sql_type in _ADDED_EVENT_COLUMNS:
            if name not in present:
                cursor.execute(f"ALTER TABLE activity_events ADD COLUMN {name} {sql_type}")

    def schema(self) -> list[str]:
        """The tables and indexes, created if missing."""
        real = "DOUBLE PRECISION"
        return [
            f"""CREATE TABLE IF NOT EXISTS activity_events (
                event_id TEXT PRIMARY KEY, at {real} NOT NULL, type TEXT NOT NULL, source TEXT, subject TEXT,
                transport TEXT, process TEXT, size INTEGER, schema_verdict TEXT, outcome TEXT NOT NULL,
                failed INTEGER NOT NULL DEFAULT 0, channels TEXT NOT NULL DEFAULT '{{}}',
                rules_fired TEXT NOT NULL DEFAULT '[]', envelope TEXT, reason TEXT, error TEXT,
                dead_letter_id TEXT, story TEXT)""",
            # The time index and (type, at, outcome, failed) cover the counts of a list: the counts
            # over a day of events read the index alone, never the rows. The time index also holds
            # the id (and, where the backend allows, the channels summary: time_index_columns), so
            # the rule (and channel) filters are answered from it too, never a row per event passed.
            f"CREATE INDEX IF NOT EXISTS activity_events_time ON activity_events ({self.time_index_columns})",
            "DROP INDEX IF EXISTS activity_events_at",  # its narrower predecessor
            # No (outcome, at) or (failed, at) index: the covering time index answers those filters,
            # and every index is paid for on each write, on the router's own CPU.
            "CREATE INDEX IF NOT EXISTS activity_events_type ON activity_events (type, at, outcome, failed)",
            "CREATE INDEX IF NOT EXISTS activity_events_subject ON activity_events (subject)",
            f"""CREATE TABLE IF NOT EXISTS activity_verdicts (
                id {self.id_column}, event_id TEXT NOT NULL, at {real} NOT NULL, rule TEXT NOT NULL,
                verdict TEXT NOT NULL, reason TEXT)""",
            "CREATE INDEX IF NOT EXISTS activity_verdicts_event ON activity_verdicts (event_id)",
            "CREATE INDEX IF NOT EXISTS activity_verdicts_rule ON activity_verdicts (rule, at)",
            "CREATE INDEX IF NOT EXISTS activity_verdicts_at ON activity_verdicts (at)",
            f"""CREATE TABLE IF NOT EXISTS activity_attempts (
                id {self.id_column}, event_id TEXT NOT NULL, at {real} NOT NULL, rule TEXT NOT NULL,
                channel TEXT NOT NULL, channel_type TEXT, idempotency_key TEXT, attempt INTEGER, message TEXT,
                duration_ms {real}, outcome TEXT NOT NULL, retry_at {real}, status INTEGER, error_class TEXT,
                error TEXT, dead_letter_id TEXT)""",
            "CREATE INDEX IF NOT EXISTS activity_attempts_event ON activity_attempts (event_id)",
            "CREATE INDEX IF NOT EXISTS activity_attempts_channel ON activity_attempts (channel, at)",
            "CREATE INDEX IF NOT EXISTS activity_attempts_at ON activity_attempts (at)",
            f"""CREATE TABLE IF NOT EXISTS activity_jobs (
                id {self.id_column}, event_id TEXT NOT NULL, at {real} NOT NULL, rule TEXT NOT NULL,
                job TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT)""",
            "CREATE INDEX IF NOT EXISTS activity_jobs_event ON activity_jobs (event_id)",
            "CREATE INDEX IF NOT EXISTS activity_jobs_at ON activity_jobs (at)",
            # What the channel stats need of the attempts kept in their event's row (inline.py):
            # per second and channel, a count of sends and their durations.
            f"""CREATE TABLE IF NOT EXISTS activity_tallies (
                id {self.id_column}, at {real} NOT NULL, channel TEXT NOT NULL, channel_type TEXT,
                count INTEGER NOT NULL, last_at {real} NOT NULL, durations TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS activity_tallies_at ON activity_tallies (at)",
        ]

    # ----------------------------------------------------------------- connection

    def _ensure(self) -> Any:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    def _reset(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._reset()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._ensure()
        try:
            cursor = conn.cursor()
            cursor.execute(self._sql(sql), tuple(params))
            rows = list(cursor.fetchall())
            conn.commit()  # PostgreSQL: end the read transaction
            return rows
        except Exception:
            self._reset()
            raise

    # ----------------------------------------------------------------- writing

    def write(self, batch: Batch) -> None:
        conn = self._ensure()
        try:
            cursor = conn.cursor()
            # Events that arrived in this batch were summarised from it; the others (a retry, a
            # delivery that outlasted a flush) from all their rows. So were arrivals still pending:
            # their retry or deferred delivery may already have run on another router, whose rows
            # only the table holds.
            arrived = {row[0] for row in batch.events}
            records = inline.arrange(batch, set())
            event_rows = records.events
            pending = {row[0] for row in event_rows if row[9] == "pending"}
            to_summarise = (batch.touched() - arrived) | pending
            self._lock_events(cursor, to_summarise)
            if event_rows:
                cursor.executemany(
                    self._sql(
                        f"INSERT INTO activity_events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                        # An event seen before keeps its row, unless that row is a rejection: a
                        # rejected event replayed (say, once its schema was fixed) tells its new story.
                        f"ON CONFLICT (event_id) DO UPDATE SET {_REPLACE_REJECTED} "
                        f"WHERE activity_events.outcome = '{REJECTED}'"
                    ),
                    event_rows,
                )
                # An arrival whose stored row is another's (a redelivery of a stored event, or the
                # same event written by another router at this moment) keeps that row: its records
                # become rows of their own, and its summary is recomputed from all of them. Found
                # after the insert, not locked before it: locking every arrival serialised the
                # writes of several routers (3 writers on PostgreSQL: 5,700-7,700 events/s, not
                # 11,500-16,200). Such a summary may miss rows another router has not committed
                # yet; the rows themselves are all kept.
                taken = self._taken(cursor, event_rows)
                if taken:
                    records = inline.arrange(batch, taken)
                    to_summarise |= taken
            for table, columns, rows in (
                ("activity_verdicts", _VERDICT_COLUMNS, records.verdicts),
                ("activity_attempts", _ATTEMPT_COLUMNS, records.attempts),
                ("activity_jobs", _JOB_COLUMNS, records.jobs),
                ("activity_tallies", _TALLY_COLUMNS, records.tallies),
            ):
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    cursor.executemany(self._sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), rows)
            self._summarise(cursor, to_summarise)
            conn.commit()
        except Exception:
            self._reset()
            raise

    def _lock_events(self, cursor: Any, event_ids: set[str]) -> None:
        """Keep other writers off ``event_ids`` until commit (a store several routers share overrides this)."""

    def _taken(self, cursor: Any, event_rows: list[tuple[Any, ...]]) -> set[str]:
        """The ids of ``event_rows`` whose stored row is not the one just inserted (told by arrival time and process)."""
        mine: dict[str, tuple[float, str]] = {}
        for row in event_rows:
            mine.setdefault(row[0], (float(row[1]), row[6]))  # an id twice: its first row is the one inserted
        ordered = sorted(mine)
        taken: set[str] = set()
        for start in range(0, len(ordered), SUMMARY_CHUNK):
            chunk = ordered[start : start + SUMMARY_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor.execute(
                self._sql(f"SELECT event_id, at, process FROM activity_events WHERE event_id IN ({marks})"), chunk
            )
            taken.update(
                event_id for event_id, at, process in cursor.fetchall() if (float(at), process) != mine[event_id]
            )
        return taken

    def _summarise(self, cursor: Any, event_ids: set[str]) -> None:
        """Recompute the outcome, channels and rules fired of ``event_ids`` from their rows.

        Rows are read in the order the attempts started, not the order they were written: a
        router that deferred a delivery may write that attempt after another router wrote the
        retry that followed it. One query per table per chunk of events, not per event: the
        writer shares the interpreter with deliveries, and per-event round trips were most of
        its cost.
        """
        ordered = sorted(event_ids)
        for start in range(0, len(ordered), SUMMARY_CHUNK):
            chunk = ordered[start : start + SUMMARY_CHUNK]
            marks = ",".join("?" * len(chunk))
            attempts = self._rows_by_event(
                cursor,
                f"SELECT event_id, at, rule, channel, outcome, error FROM activity_attempts WHERE event_id IN ({marks}) "
                "ORDER BY at, id",
                chunk,
            )
            verdicts = self._rows_by_event(
                cursor,
                f"SELECT event_id, rule, verdict FROM activity_verdicts WHERE event_id IN ({marks}) ORDER BY at, id",
                chunk,
            )
            self._merge_stories(cursor, chunk, marks, attempts)
            jobs = self._rows_by_event(
                cursor,
                f"SELECT event_id, rule, outcome FROM activity_jobs WHERE event_id IN ({marks}) ORDER BY at, id",
                chunk,
            )
            updates = []
            for event_id in chunk:
                its_verdicts = verdicts.get(event_id, [])
                fired = list(dict.fromkeys(rule for rule, verdict in its_verdicts if verdict == "fired"))
                outcome, channels, failed = summarise(
                    [row[1:] for row in attempts.get(event_id, [])], fired, its_verdicts, jobs.get(event_id, [])
                )
                updates.append((outcome, fast_json.dumps(channels), fast_json.dumps(fired), int(failed), event_id))
            cursor.executemany(
                self._sql(
                    "UPDATE activity_events SET outcome = ?, channels = ?, rules_fired = ?, failed = ? "
                    # A rejected message's outcome is final (its failure notification's attempts
                    # are part of its story, not a delivery of it); 'refused' rows predate 'rejected'.
                    "WHERE event_id = ? AND outcome <> 'rejected' AND coalesce(schema_verdict, '') <> 'refused'"
                ),
                updates,
            )

    def _merge_stories(self, cursor: Any, chunk: list[str], marks: str, attempts: dict[str, list[Any]]) -> None:
        """Add the inline attempts of ``chunk`` to its attempt rows (``at`` first), in the order they started."""
        cursor.execute(
            self._sql(f"SELECT event_id, story FROM activity_events WHERE event_id IN ({marks}) AND story IS NOT NULL"),
            chunk,
        )
        for event_id, story in cursor.fetchall():
            # Inline attempts came in the event's first batch: before its table rows at equal times.
            attempts[event_id] = sorted(
                [(a[1], a[2], a[3], a[9], a[13]) for a in inline.unpack(event_id, story)] + attempts.get(event_id, []),
                key=_started,
            )

    def _rows_by_event(self, cursor: Any, sql: str, event_ids: list[str]) -> dict[str, list[Any]]:
        """The rows ``sql`` selects (event id first), grouped by event id, in the query's order."""
        cursor.execute(self._sql(sql), event_ids)
        grouped: dict[str, list[Any]] = {}
        for event_id, *rest in cursor.fetchall():
            grouped.setdefault(event_id, []).append(tuple(rest))
        return grouped

    def _tally_durations(self, since: float) -> list[tuple[float, str, list[float]]]:
        """(at, channel, send durations in ms) of the inline sends since ``since``: the newest, about PERCENTILE_SAMPLE.

        The counts are read first (small rows) to find how far back the sample reaches, so the
        durations read are bounded whatever the traffic.
        """
        cutoff = since
        total = 0
        for at, count in self._query("SELECT at, count FROM activity_tallies WHERE at >= ? ORDER BY at DESC", (since,)):
            total += int(count)
            if total >= PERCENTILE_SAMPLE:
                cutoff = float(at)
                break
        rows = self._query("SELECT at, channel, durations FROM activity_tallies WHERE at >= ?", (cutoff,))
        return [(float(at), name, json.loads(durations or "[]")) for at, name, durations in rows]

    # ----------------------------------------------------------------- retention

    def prune(self, now: float, retention: float, max_bytes: int) -> int:
        deleted = self._delete_before(now - retention)
        size = self.size_bytes()
        rounds = 0
        while size > max_bytes * 0.9 and rounds < 20:
            rounds += 1
            total = self._query("SELECT count(*) FROM activity_events")[0][0]
            if not total:
                break
            # Delete the oldest share that brings the store to 80% of max_bytes (at least 1,000 events).
            share = min(1.0, 1.0 - (max_bytes * 0.8) / size)
            offset = min(total - 1, max(1000, int(total * share)))
            row = self._query("SELECT at FROM activity_events ORDER BY at LIMIT 1 OFFSET ?", (offset,))
            if not row:
                break
            deleted += self._delete_before(row[0][0])
            self._vacuum(shrink=True)
            size = self.size_bytes()
        if deleted and not rounds:
            self._vacuum(shrink=False)
        return deleted

    def _delete_before(self, cutoff: float) -> int:
        conn = self._ensure()
        try:
            cursor = conn.cursor()
            cursor.execute(self._sql("DELETE FROM activity_events WHERE at < ?"), (cutoff,))
            deleted = int(cursor.rowcount or 0)
            for table in TABLES[1:]:
                cursor.execute(self._sql(f"DELETE FROM {table} WHERE at < ?"), (cutoff,))
            conn.commit()
            return deleted
        except Exception:
            self._reset()
            raise

    # ----------------------------------------------------------------- reading

    def _where(
        self, flt: Filter, *, with_outcome: bool, with_cursor: bool, walk_time: bool = False
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if flt.since is not None:
            clauses.append("at >= ?")
            params.append(flt.since)
        if flt.until is not None:
            clauses.append("at < ?")
            params.append(flt.until)
        if flt.type:
            if "*" in flt.type:
                clauses.append("type LIKE ?")
                params.append(flt.type.replace("%", "").replace("_", "\\_").replace("*", "%"))
            else:
                clauses.append("type = ?")
                params.append(flt.type)
        # Verdicts and attempts come after their event arrived: bounding them by `since` too lets
        # the (rule, at) and (channel, at) indexes answer instead of every row of the rule or channel.
        after = " AND at >= ?" if flt.since is not None else ""
        if flt.rule:
            # `+` keeps SQLite from looking up each of the rule's events by id (then sorting them
            # all): the time index is walked instead, and stops after a page (see list_events).
            subquery = f"SELECT event_id FROM activity_verdicts WHERE rule = ?{after}"
            if walk_time:
                clauses.append(f"{self.not_indexed}event_id IN ({subquery})")
            else:
                clauses.append(self.by_ids.format(subquery=subquery))
            params += [flt.rule, *([flt.since] if after else [])]
        if flt.channel:
            # The event's own channels summary: the list walks its time index and stops after a page,
            # where a subquery would first collect every attempt of the channel in the window.
            like, like_params = _json_like("channels", flt.channel, ":")
            clauses.append(like)
            params += like_params
        if flt.q:
            # An id, or a subject prefix as a range (so the subject index answers; LIKE would scan).
            clauses.append(
                "event_id IN (SELECT event_id FROM activity_events WHERE event_id = ? "
                "UNION SELECT event_id FROM activity_events WHERE subject >= ? AND subject < ?)"
            )
            params += [flt.q, flt.q, flt.q + "\U0010ffff"]
        if with_outcome and flt.outcome:
            if flt.outcome == "failed":
                clauses.append("failed = 1")
            else:
                clauses.append("outcome = ?")
                params.append(flt.outcome)
        if with_cursor and flt.before is not None:
            at, event_id = flt.before
            # `at <= ?` first: a range the index answers (an OR of the two would scan every row).
            clauses.append("at <= ? AND (at < ? OR event_id < ?)")
            params += [at, at, event_id]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _rule_is_common(self, flt: Filter) -> bool:
        """Whether the rule filter matches so many events that walking the time index is cheaper.

        Looking the rule's events up by id costs per event (about 3 us each, and a sort); walking
        the time index costs per event passed, and stops once a page and the capped counts are
        found: cheaper when the rule's events are many. Their number is read from the verdicts'
        (rule, at) index, which costs far less than either.
        """
        if not flt.rule:
            return False
        sql = "SELECT count(*) FROM (SELECT 1 FROM activity_verdicts WHERE rule = ?"
        params: list[Any] = [flt.rule]
        if flt.since is not None:
            sql += " AND at >= ?"
            params.append(flt.since)
        rows = self._query(sql + " LIMIT ?) common", [*params, COMMON_RULE + 1])
        return int(rows[0][0]) > COMMON_RULE

    def list_events(self, flt: Filter) -> dict[str, Any]:
        limit = max(1, min(flt.limit, MAX_LIMIT))
        walk_time = self._rule_is_common(flt)
        where, params = self._where(flt, with_outcome=True, with_cursor=True, walk_time=walk_time)
        rows = self._query(
            f"SELECT {_LIST_COLUMNS} FROM activity_events{where} ORDER BY at DESC, event_id DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        events = [
            {
                "event_id": r[0],
                "source": r[3],
                "type": r[2],
                "subject": r[4],
                "received_at": iso(r[1]),
                "transport": r[5],
                "size": r[6],
                "schema": r[7],
                "rules_fired": json.loads(r[8] or "[]"),
                "outcome": r[9],
                "channels": json.loads(r[10] or "{}"),
                "rejection": _rejection(r[11], r[12], r[13]),
            }
            for r in rows
        ]
        where, params = self._where(flt, with_outcome=False, with_cursor=False, walk_time=walk_time)
        counts = counts_template()
        counted = 0
        for outcome, count, failed in self._query(
            # The newest COUNT_CAP events at most, read from the covering (at, outcome, failed) index.
            f"SELECT outcome, count(*), sum(failed) FROM (SELECT outcome, failed FROM activity_events{where} "
            "ORDER BY at DESC LIMIT ?) newest GROUP BY outcome",
            [*params, COUNT_CAP + 1],
        ):
            counted += int(count)
            if outcome in counts:
                counts[outcome] += int(count)
            counts["failed"] += int(failed or 0)
        last = rows[-1] if rows else None
        return {
            "events": events,
            "counts": counts,
            "counts_exact": counted <= COUNT_CAP,
            "next": f"{last[1]!r}:{last[0]}" if more and last else None,
        }

    def event_story(self, event_id: str) -> dict[str, Any] | None:
        found = self._query(
            "SELECT at, transport, process, schema_verdict, outcome, envelope, type, source, subject, size, "
            "reason, error, dead_letter_id, story FROM activity_events WHERE event_id = ?",
            (event_id,),
        )
        verdicts = self._query(
            "SELECT rule, verdict, reason, at FROM activity_verdicts WHERE event_id = ? ORDER BY at, id", (event_id,)
        )
        attempts = sorted(
            inline.unpack(event_id, found[0][13] if found else None)
            + self._query(
                f"SELECT {_ATTEMPT_COLUMNS} FROM activity_attempts WHERE event_id = ? ORDER BY at, id", (event_id,)
            ),
            key=lambda a: float(a[1]),
        )
        jobs = self._query(
            "SELECT rule, job, outcome, error, at FROM activity_jobs WHERE event_id = ? ORDER BY at, id", (event_id,)
        )
        if not found and not attempts and not verdicts:
            return None
        deliveries: dict[tuple[str, str], dict[str, Any]] = {}
        outcomes: list[str] = []
        for a in attempts:
            key = (a[2], a[3])
            delivery = deliveries.setdefault(
                key,
                {
                    "rule": a[2],
                    "channel": a[3],
                    "channel_type": a[4],
                    "idempotency_key": a[5],
                    "dead_letter_id": None,
                    "message": None,
                    "attempts": [],
                    "outcome": None,
                },
            )
            if a[7]:
                delivery["message"] = json.loads(a[7])
            delivery["attempts"].append(
                {
                    "attempt": a[6],
                    "started_at": iso(a[1]),
                    "duration_ms": a[8],
                    "outcome": a[9],
                    "retry_at": iso(a[10]),
                    "status": a[11],
                    "error_class": a[12],
                    "error": a[13],
                }
            )
            delivery["outcome"] = channel_outcome(a[9], a[13])
            delivery["dead_letter_id"] = a[14] if a[9] == "dead" else None
        for delivery in deliveries.values():
            outcomes.append(delivery["outcome"])
        story: dict[str, Any] = {
            "event": json.loads(found[0][5]) if found and found[0][5] else {"id": event_id},
            "event_id": event_id,
            "received_at": iso(found[0][0]) if found else None,
            "transport": found[0][1] if found else None,
            "process": found[0][2] if found else None,
            "size": found[0][9] if found else None,
            "schema": found[0][3] if found else None,
            "rules": [{"rule": v[0], "verdict": v[1], "reason": v[2] or "", "at": iso(v[3])} for v in verdicts],
            "deliveries": list(deliveries.values()),
            "jobs": [{"rule": j[0], "job": j[1], "outcome": j[2], "error": j[3], "at": iso(j[4])} for j in jobs],
            "outcome": found[0][4] if found else None,
            "rejection": _rejection(*found[0][10:13]) if found else None,
        }
        return story

    def dead_letters(self, flt: Filter) -> list[dict[str, Any]]:
        clauses = [
            "a.outcome = 'dead'",
            "NOT EXISTS (SELECT 1 FROM activity_attempts b WHERE b.event_id = a.event_id "
            "AND b.rule = a.rule AND b.channel = a.channel AND b.id > a.id)",
        ]
        params: list[Any] = []
        if flt.since is not None:
            clauses.append("a.at >= ?")
            params.append(flt.since)
        if flt.until is not None:
            clauses.append("a.at < ?")
            params.append(flt.until)
        if flt.rule:
            clauses.append("a.rule = ?")
            params.append(flt.rule)
        if flt.channel:
            clauses.append("a.channel = ?")
            params.append(flt.channel)
        if flt.type:
            clauses.append("e.type = ?")
            params.append(flt.type)
        if flt.q:
            clauses.append("a.event_id = ?")
            params.append(flt.q)
        rows = self._query(
            "SELECT a.event_id, a.rule, a.channel, e.type, e.at, a.at, a.error_class, a.error, a.attempt, "
            "a.dead_letter_id "
            "FROM activity_attempts a LEFT JOIN activity_events e ON e.event_id = a.event_id WHERE "
            + " AND ".join(clauses)
            + " ORDER BY a.at DESC LIMIT ?",
            [*params, max(1, min(flt.limit, 10_000))],
        )
        return [
            {
                "event_id": r[0],
                "rule": r[1],
                "channel": r[2],
                "type": r[3],
                "received_at": iso(r[4]),
                "dead_at": iso(r[5]),
                "reason": r[6],
                "error": r[7],
                "attempts": r[8],
                "dead_letter_id": r[9],
            }
            for r in rows
        ]

    def rule_stats(self, since: float) -> list[dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for rule, matched in self._query(
            "SELECT rule, count(DISTINCT event_id) FROM activity_verdicts WHERE at >= ? GROUP BY rule", (since,)
        ):
            stats[rule] = {"rule": rule, "matched": int(matched), "fired": 0, "skipped": 0, "last_fired": None}
        for rule, verdict, count in self._query(
            "SELECT rule, verdict, count(*) FROM activity_verdicts WHERE at >= ? GROUP BY rule, verdict", (since,)
        ):
            entry = stats[rule]
            if verdict == "fired":
                entry["fired"] += int(count)
            else:
                entry["skipped"] += int(count)
        for rule, last in self._query(
            "SELECT rule, max(at) FROM activity_verdicts WHERE verdict = 'fired' GROUP BY rule", ()
        ):
            stats.setdefault(rule, {"rule": rule, "matched": 0, "fired": 0, "skipped": 0, "last_fired": None})
            stats[rule]["last_fired"] = iso(last)
        return sorted(stats.values(), key=lambda s: s["rule"])

    def channel_stats(self, since: float, now: float) -> list[dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        window = max(1.0, now - since)
        for channel, channel_type, outcome, count in self._query(
            "SELECT channel, max(channel_type), outcome, count(*) FROM activity_attempts WHERE at >= ? "
            "GROUP BY channel, outcome",
            (since,),
        ):
            entry = stats.setdefault(channel, _channel_entry(channel, channel_type))
            if outcome in ("sent", "retry", "dead"):
                entry["attempts"] += int(count)
            if outcome == "sent":
                entry["sent"] += int(count)
            elif outcome in ("retry", "dead"):
                entry["failed"] += int(count)
        # Sends kept inline in short stories (inline.py) are counted in the tallies.
        for channel, channel_type, count in self._query(
            "SELECT channel, max(channel_type), sum(count) FROM activity_tallies WHERE at >= ? GROUP BY channel",
            (since,),
        ):
            entry = stats.setdefault(channel, _channel_entry(channel, channel_type))
            entry["attempts"] += int(count)
            entry["sent"] += int(count)
        latencies: dict[str, list[float]] = {}
        for _, channel, durations in self._tally_durations(since):
            latencies.setdefault(channel, []).extend(float(d or 0.0) for d in durations)
        for channel, duration in self._query(
            "SELECT channel, duration_ms FROM activity_attempts WHERE at >= ? AND outcome IN ('sent', 'retry', 'dead') "
            "ORDER BY at DESC LIMIT ?",
            (since, PERCENTILE_SAMPLE),
        ):
            latencies.setdefault(channel, []).append(float(duration or 0.0))
        for channel, paused in self._query(
            "SELECT channel, max(retry_at) FROM activity_attempts WHERE at >= ? AND status = 429 AND retry_at > ? "
            "GROUP BY channel",
            (since, now),
        ):
            if channel in stats:
                stats[channel]["paused_until"] = iso(paused)
        for channel, error, at in self._query(
            "SELECT a.channel, a.error, a.at FROM activity_attempts a WHERE a.id IN (SELECT max(id) FROM "
            "activity_attempts WHERE at >= ? AND outcome IN ('retry', 'dead') GROUP BY channel)",
            (since,),
        ):
            if channel in stats:
                stats[channel]["last_error"] = error
                stats[channel]["last_error_at"] = iso(at)
        for channel, entry in stats.items():
            entry["send_rate"] = round(entry["attempts"] / window, 4)
            if entry["attempts"]:
                entry["success_ratio"] = round(entry["sent"] / entry["attempts"], 4)
            values = sorted(latencies.get(channel, []))
            entry["p50_ms"] = percentile(values, 0.5)
            entry["p99_ms"] = percentile(values, 0.99)
        return sorted(stats.values(), key=lambda s: s["channel"])

    def overview(self, now: float, window: float, step: float) -> list[dict[str, Any]]:
        start = now - window
        buckets = max(1, math.ceil(window / step))
        bucket = self._bucket()
        events = dict.fromkeys(range(buckets), 0)
        for b, count in self._query(
            f"SELECT {bucket} AS b, count(*) FROM activity_events WHERE at >= ? GROUP BY b", (start, step, start)
        ):
            if int(b) in events:
                events[int(b)] = int(count)
        deliveries: dict[int, dict[str, int]] = {b: {} for b in range(buckets)}
        for b, outcome, count in self._query(
            f"SELECT {bucket} AS b, outcome, count(*) FROM activity_attempts WHERE at >= ? GROUP BY b, outcome",
            (start, step, start),
        ):
            if int(b) in deliveries:
                deliveries[int(b)][outcome] = int(count)
        for b, count in self._query(
            f"SELECT {bucket} AS b, sum(count) FROM activity_tallies WHERE at >= ? GROUP BY b",
            (start, step, start),
        ):
            if int(b) in deliveries:
                deliveries[int(b)]["sent"] = deliveries[int(b)].get("sent", 0) + int(count)
        latency: dict[int, list[float]] = {b: [] for b in range(buckets)}
        for b, duration in self._query(
            f"SELECT {bucket} AS b, duration_ms FROM activity_attempts WHERE at >= ? AND outcome IN ('sent', 'retry', "
            "'dead') ORDER BY at DESC LIMIT ?",
            (start, step, start, PERCENTILE_SAMPLE),
        ):
            if int(b) in latency:
                latency[int(b)].append(float(duration or 0.0))
        for at, _, durations in self._tally_durations(start):
            b = int((at - start) // step)
            if b in latency:
                latency[b].extend(float(d or 0.0) for d in durations)
        series = []
        for b in range(buckets):
            values = sorted(latency[b])
            series.append(
                {
                    "t": iso(start + b * step),
                    "events_per_s": round(events[b] / step, 4),
                    "deliveries_per_s": {k: round(v / step, 4) for k, v in deliveries[b].items()},
                    "latency_p50_ms": percentile(values, 0.5),
                    "latency_p99_ms": percentile(values, 0.99),
                }
            )
        return series


def _channel_entry(channel: str, channel_type: str | None) -> dict[str, Any]:
    return {
        "channel": channel,
        "type": channel_type,
        "sent": 0,
        "failed": 0,
        "attempts": 0,
        "send_rate": 0.0,
        "success_ratio": None,
        "p50_ms": None,
        "p99_ms": None,
        "paused_until": None,
        "last_error": None,
        "last_error_at": None,
    }


def _json_like(column: str, name: str, after: str) -> tuple[str, list[str]]:
    """SQL finding ``name`` as a JSON string (followed by ``after``) in the JSON text of ``column``.

    A name beyond ASCII is escaped in summaries written before 2026-12-03 and kept as is since.
    """
    keys = dict.fromkeys(json.dumps(name, ensure_ascii=ascii) + after for ascii in (False, True))
    sql = "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for _ in keys) + ")"
    return sql, ["%" + key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for key in keys]


def _started(row: tuple[Any, ...]) -> float:
    """The start of an attempt row read with ``at`` first (see ``_summarise``)."""
    return float(row[0])


def _rejection(reason: str | None, error: str | None, dead_letter_id: str | None) -> dict[str, Any] | None:
    """Why a message was rejected (``reason``: poison, oversize, schema, forged), or None for a routed event."""
    if reason is None:
        return None
    return {"reason": reason, "error": error, "dead_letter_id": dead_letter_id}


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (nearest rank), None when empty."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return round(values[index], 3)


def now() -> float:
    return time.time()


__all__ = ["OUTCOMES", "ActivityStore", "Batch", "Filter", "SqlStore", "percentile"]
