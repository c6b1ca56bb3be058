"""A PostgreSQL schema of a test's own, so tests sharing the machine's PostgreSQL never see each other's tables."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def private_schema(postgres_dsn: str, prefix: str) -> Iterator[str]:
    """Create a schema named ``<prefix>_<random>``, yield a URL whose search_path is it, drop it afterwards."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_dsn}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
