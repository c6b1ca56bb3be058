"""The PostgreSQL activity store (``activity.url: postgresql://...``): several routers, one history.

Needs psycopg 3 (``pip install router[postgres]``); imported only when this backend is used.
"""

from __future__ import annotations

import zlib
from typing import Any

from router.activity.store import TABLES, SqlStore
from router.core.redact import redact_url

CONNECT_TIMEOUT = 3  # seconds: an unreachable store must fail fast, the recorder drops and moves on
_SCHEMA_LOCK = 0x526F7574  # advisory lock: several routers starting at once create the tables once
_EVENT_LOCKS = 0x41637476  # the (int, int) advisory lock space of the event summaries
LOCK_BUCKETS = 64


class PostgresActivityStore(SqlStore):
    """Activity records in PostgreSQL tables ``activity_*`` (in the connection's search_path)."""

    id_column = "BIGSERIAL PRIMARY KEY"
    placeholder = "%s"
    # The ids first, then an index scan of just those: PostgreSQL's planner would otherwise walk
    # every event in the window for a rule that matched none of them.
    by_ids = "event_id = ANY(ARRAY({subquery}))"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def describe(self) -> str:
        return f"postgresql {redact_url(self.url)}"

    def open(self) -> None:
        self._ensure()

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as error:  # pragma: no cover - depends on the install
            raise RuntimeError("activity.url is postgresql://: install router[postgres] (psycopg 3)") from error
        conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=False)
        with conn.cursor() as cursor:
            cursor.execute("SET statement_timeout = 30000")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._create(cursor)
        conn.commit()
        return conn

    def _lock_events(self, cursor: Any, event_ids: set[str]) -> None:
        # Two routers may write rows of one event at once (a deferral here, its retry there).
        # Without a lock each summary reads only its own uncommitted rows and the later commit
        # wins, wrongly; a row lock cannot help while the event's row is not yet committed. So
        # each event maps to one of LOCK_BUCKETS transaction locks, taken in one order: at most
        # that many locks per write, whatever its size, and no deadlock.
        for bucket in sorted({zlib.crc32(event_id.encode()) % LOCK_BUCKETS for event_id in event_ids}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_EVENT_LOCKS, bucket))

    def _bucket(self) -> str:
        return "FLOOR((at - %s) / %s)::bigint"

    def size_bytes(self) -> int:
        rows = self._query(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(%s::text[]) AS t",
            (list(TABLES),),
        )
        return int(rows[0][0] or 0)

    def _vacuum(self, *, shrink: bool) -> None:
        # After rows aged out (every few seconds in a steady flow) a plain VACUUM makes their space
        # reusable, so the store stops growing, and ANALYZE keeps the planner's statistics fresh: with
        # stale ones it looked a common rule's events up one by one (1.4 s instead of 80 ms for a
        # 7-day list at 200,000 events). Only over max_bytes does VACUUM FULL give space back (and
        # ANALYZE again, as the rows changed): it rewrites each table and locks it for that time (other routers' writers wait in their own
        # processes, their buffers absorb it, deliveries never do).
        conn = self._ensure()
        conn.commit()
        conn.autocommit = True
        try:
            for table in TABLES:
                conn.execute(f"VACUUM (FULL, ANALYZE) {table}" if shrink else f"VACUUM (ANALYZE) {table}")
        finally:
            conn.autocommit = False
