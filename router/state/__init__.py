"""The state store: SQLite for one process (the default), Redis when several processes share the work."""

from __future__ import annotations

import time
from collections.abc import Callable

from router.state.base import DIGEST_RETENTION, DigestAdd, StateStore
from router.state.sqlite import SqliteStateStore, sqlite_path_from_url

__all__ = ["DIGEST_RETENTION", "DigestAdd", "SqliteStateStore", "StateStore", "open_state_store"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_state_store(
    url: str,
    *,
    prefix: str = "router:",
    clock: Callable[[], float] = time.time,
) -> StateStore:
    """Build the store for ``url``; call ``await store.open()`` (or ``async with``) before use.

    ``sqlite:///relative.db`` (relative to the current directory; the config loader has already anchored rules.yaml's to its folder), ``sqlite:////abs/path.db``,
    ``sqlite:///:memory:``, or ``redis://host:port/db`` (also ``rediss://`` and ``unix://``),
    whose keys all start with ``prefix``.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return SqliteStateStore(sqlite_path_from_url(url), clock=clock)
    if scheme in _REDIS_SCHEMES:
        # Imported here so a SQLite-only setup never loads the Redis client.
        from router.state.redis import RedisStateStore

        return RedisStateStore(url, prefix=prefix, clock=clock)
    # Name only the scheme: the rest of the URL may carry a password.
    shown = f"scheme {scheme!r}" if scheme else "a URL without a scheme"
    raise ValueError(
        f"unsupported state store URL ({shown}); use sqlite:///path/to/state.db, sqlite:///:memory: or redis://host:port/db"
    )
