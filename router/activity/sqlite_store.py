"""The SQLite activity store: a file beside rules.yaml by default, WAL, mode 0600, nothing to install."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from router.activity.store import SqlStore


class SqliteActivityStore(SqlStore):
    """Activity records in one SQLite file (``auto_vacuum=INCREMENTAL``: pruning gives space back)."""

    # PostgreSQL's B-tree entries have a size limit that a long channels summary could pass; SQLite's do not.
    time_index_columns = "at, outcome, failed, event_id, channels"
    not_indexed = "+"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def open(self) -> None:
        self._ensure()

    def _connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Created 0600 before SQLite opens it: event data is nobody else's business.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # history, not the ledger: a power cut may lose the last batch
        conn.execute("PRAGMA busy_timeout = 5000")
        # Names are found in JSON summaries with LIKE: exact, as PostgreSQL's (SQLite's folds ASCII case).
        conn.execute("PRAGMA case_sensitive_like = ON")
        self._create(conn.cursor())
        conn.commit()
        return conn

    def size_bytes(self) -> int:
        """What the files take on disk (the database, its WAL and shared memory): what max_bytes bounds."""
        return self.file_bytes()

    def file_bytes(self) -> int:
        """What the files take on disk (database and WAL)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            candidate = Path(f"{self.path}{suffix}")
            if candidate.exists():
                total += candidate.stat().st_size
        return total

    def _vacuum(self, *, shrink: bool) -> None:
        conn = self._ensure()
        # The pragma frees one page per step, and sqlite3's execute() steps once: executescript()
        # runs it to completion (and commits first).
        conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
