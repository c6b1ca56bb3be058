"""Where audit rows go: a SQLite file or a PostgreSQL table, created if missing.

Both stores insert-or-ignore on (event_id, rule), so a redelivered event is recorded once.
Neither blocks the event loop: SQLite runs in a worker thread, PostgreSQL uses psycopg's
async connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from router_audit.options import AuditOptions
from router_audit.records import COLUMNS, AuditRow

if TYPE_CHECKING:
    import psycopg


class Store(Protocol):
    """Writes audit rows to one table."""

    async def record(self, row: AuditRow) -> bool:
        """Insert ``row``; False when (event_id, rule) was already recorded."""
        ...

    async def aclose(self) -> None:
        """Close the connection."""
        ...


def open_store(options: AuditOptions) -> Store:
    """The store ``options.url`` names (connections open lazily, on the first record)."""
    if options.backend == "sqlite":
        return SQLiteStore(options.sqlite_path, options.table)
    return PostgresStore(options.url.get_secret_value(), options.table)


class SQLiteStore:
    """A table in a SQLite file, written from a worker thread."""

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self.table = table
        self._conn: sqlite3.Connection | None = None
        # One connection shared by the default executor's threads: the lock serialises them,
        # which SQLite would do anyway (one writer at a time).
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
                "event_id TEXT NOT NULL, rule TEXT NOT NULL, ref TEXT NOT NULL, type TEXT NOT NULL,"
                " source TEXT NOT NULL, time TEXT NOT NULL, subject TEXT, data TEXT NOT NULL,"
                " recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
                " PRIMARY KEY (event_id, rule))"
            )
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{self.table}_ref" ON "{self.table}" (ref)')
            self._conn = conn
        return self._conn

    def _insert(self, row: AuditRow) -> bool:
        values = (row.event_id, row.rule, row.ref, row.type, row.source, row.time.isoformat(), row.subject)
        with self._lock:
            conn = self._connect()
            cursor = conn.execute(
                f'INSERT OR IGNORE INTO "{self.table}" ({", ".join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (*values, row.data_json()),
            )
            return cursor.rowcount == 1

    async def record(self, row: AuditRow) -> bool:
        return await asyncio.to_thread(self._insert, row)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)


class PostgresStore:
    """A PostgreSQL table, written through one async psycopg connection (reopened if it breaks)."""

    def __init__(self, url: str, table: str) -> None:
        self._url = url  # carries the password: never logged
        self.table = table
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock: asyncio.Lock | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        import psycopg
        from psycopg import errors

        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A connection (and a lock) belongs to the event loop that made it.
            self._conn, self._loop, self._connect_lock = None, loop, asyncio.Lock()
        assert self._connect_lock is not None
        async with self._connect_lock:
            if self._conn is None or self._conn.closed:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                try:
                    await conn.execute(
                        f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
                        "event_id TEXT NOT NULL, rule TEXT NOT NULL, ref TEXT NOT NULL, type TEXT NOT NULL,"
                        " source TEXT NOT NULL, time TIMESTAMPTZ NOT NULL, subject TEXT, data JSONB NOT NULL,"
                        " recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
                        " PRIMARY KEY (event_id, rule))"
                    )
                    await conn.execute(f'CREATE INDEX IF NOT EXISTS "{self.table}_ref" ON "{self.table}" (ref)')
                except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
                    pass  # another router process created it at the same moment
                except BaseException:
                    await conn.close()
                    raise
                self._conn = conn
            return self._conn

    async def record(self, row: AuditRow) -> bool:
        from psycopg.types.json import Jsonb

        conn = await self._connection()
        cursor = await conn.execute(
            f'INSERT INTO "{self.table}" ({", ".join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)'
            " ON CONFLICT (event_id, rule) DO NOTHING",
            (
                row.event_id,
                row.rule,
                row.ref,
                row.type,
                row.source,
                row.time,
                row.subject,
                Jsonb(row.data, dumps=_dumps),
            ),
        )
        return cursor.rowcount == 1

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
