"""Opening the store named by the configuration, and reading filters from the CLI or a query string."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from router.activity.records import OUTCOMES
from router.activity.store import MAX_LIMIT, ActivityStore, Filter
from router.config.models import ActivityConfig
from router.core.durations import parse_duration

DEFAULT_FILE = "activity.db"


class FilterError(ValueError):
    """A filter that cannot be read; the message names the parameter and what is wrong."""


def activity_url(config: ActivityConfig, rules_dir: Path) -> str:
    """The store's URL: ``activity.url``, or ``activity.db`` beside rules.yaml."""
    if config.url:
        return config.url
    return f"sqlite:///{(rules_dir / DEFAULT_FILE).absolute()}"


def open_store(url: str, rules_dir: Path | None = None) -> ActivityStore:
    """The store behind ``url`` (``sqlite:///path``, relative to rules.yaml's folder; ``postgresql://``)."""
    if url.startswith("sqlite:///"):
        from router.activity.sqlite_store import SqliteActivityStore

        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute() and rules_dir is not None:
            path = rules_dir / path
        return SqliteActivityStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from router.activity.postgres_store import PostgresActivityStore

        return PostgresActivityStore(url)
    raise FilterError("activity.url: use sqlite:///path/to/activity.db or postgresql://user@host/db")


def parse_time(value: str, name: str, now: float | None = None) -> float:
    """A duration back from now (``1h``) or an ISO 8601 time, as an epoch."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(value)
    except (ValueError, TypeError):
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{name}: expected a duration like 1h or 7d, or an ISO 8601 time; got {value[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        raise FilterError(f"{name}: an ISO 8601 time needs a time zone (…Z or +00:00); got {value[:40]!r}")
    return moment.timestamp()


def parse_filter(params: Mapping[str, str], *, default_since: str | None = "1h") -> Filter:
    """A :class:`Filter` from query-string-like parameters; raises :class:`FilterError` naming the bad one."""
    flt = Filter()
    since = params.get("since") or default_since
    if since:
        flt.since = parse_time(since, "since")
    if params.get("until"):
        flt.until = parse_time(params["until"], "until")
    for name in ("type", "rule", "channel", "q"):
        value = params.get(name) or None
        if value is not None and len(value) > 500:
            raise FilterError(f"{name}: longer than 500 characters")
        setattr(flt, name, value)
    outcome = params.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise FilterError(f"outcome: expected one of {', '.join(OUTCOMES)}; got {outcome[:40]!r}")
    flt.outcome = outcome
    if params.get("limit"):
        try:
            flt.limit = int(params["limit"])
        except ValueError:
            raise FilterError(f"limit: expected a number; got {params['limit'][:20]!r}") from None
        if not 1 <= flt.limit <= MAX_LIMIT:
            raise FilterError(f"limit: between 1 and {MAX_LIMIT}")
    if params.get("before"):
        at, sep, event_id = params["before"].partition(":")
        try:
            flt.before = (float(at), event_id)
        except ValueError:
            raise FilterError("before: not a cursor from a previous answer's 'next'") from None
        if not sep:
            raise FilterError("before: not a cursor from a previous answer's 'next'")
    return flt
