"""One contract for both activity stores (docs/activity.md): SQLite (the default) and PostgreSQL.

SQLite runs it twice: written in this process, and written through the writer process
``router serve`` uses (router/activity/writer.py), read here.

Each test writes batches the way the recorder does and reads them back the way the CLI and the
API do: filters, counts, cursors, an event's story, dead letters, stats, retention by age and size.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from router.activity import store as store_module
from router.activity.query import open_store, parse_filter
from router.activity.recorder import build_batch
from router.activity.store import ActivityStore, Batch, Filter, SqlStore
from router.activity.writer import WriterProcess
from router.core.delivery import Delivery
from router.core.events import Event
from router.core.message import Message, Outcome
from router.core.redact import register_secrets
from tests.builders import make_event
from tests.pg_schema import private_schema
from tests.polling import until_sync


class ThroughWriterProcess:
    """A store whose writes and pruning go through a ``WriterProcess`` (as ``router serve``'s do); reads stay here."""

    def __init__(self, url: str) -> None:
        self.reader = open_store(url)
        self.writer = WriterProcess(url, None, self.reader.describe())

    def write(self, batch: Batch) -> None:
        self.writer.write(batch)

    def prune(self, now: float, retention: float, max_bytes: int) -> int:
        return self.writer.prune(now, retention, max_bytes)

    def __getattr__(self, name: str) -> object:
        return getattr(self.reader, name)


@pytest.fixture(params=["sqlite", "sqlite-writer-process", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ActivityStore]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'activity.db'}")
        opened.open()
        yield opened
        opened.close()
        return
    if request.param == "sqlite-writer-process":
        through = ThroughWriterProcess(f"sqlite:///{tmp_path / 'activity.db'}")
        through.writer.open()
        through.reader.open()
        yield cast(ActivityStore, through)
        through.writer.close()
        through.reader.close()
        return
    with private_schema(request.getfixturevalue("postgres_dsn"), "activity_test") as url:
        opened = open_store(url)
        try:
            opened.open()
            yield opened
        finally:
            opened.close()


def event(event_id: str, type: str = "order.paid", subject: str | None = None, **data: object) -> Event:
    return make_event(dict(data), type=type, id=event_id, source="shop", time=datetime.now(UTC), subject=subject)


def delivery(ev: Event, channel: str, attempt: int = 1, rule: str = "paid") -> Delivery:
    return Delivery(ev, rule, channel, "webhook", Message(f"paid {ev.id}", "body", payload={"k": 1}), attempt)


def record(store: ActivityStore, *items: tuple[object, ...]) -> None:
    store.write(build_batch(list(items)))


def story_of(store: ActivityStore, ev: Event, at: float, channels: dict[str, list[tuple[str, Outcome]]]) -> None:
    """An event that fired rule 'paid' and whose channels saw these (action, outcome) attempts."""
    items: list[tuple[object, ...]] = [
        ("e", at, ev, 100, "none", "embedded", "test:1"),
        ("v", at, ev.id, "paid", "fired", ""),
    ]
    for channel, attempts in channels.items():
        for number, (action, outcome) in enumerate(attempts, start=1):
            retry_at = at + 120 if action == "retry" else None
            letter = f"dl-{ev.id}-{channel}" if action == "dead" else None
            items.append(("a", at + number, delivery(ev, channel, number), outcome, action, 0.012, retry_at, letter))
    record(store, *items)


def test_an_event_story_keeps_every_attempt_of_every_channel(store: ActivityStore) -> None:
    now = time.time()
    ev = event("e-1", n=1)
    story_of(
        store,
        ev,
        now,
        {
            "flaky": [("retry", Outcome.retryable("HTTP 503 Service Unavailable")), ("sent", Outcome.sent("HTTP 204"))],
            "broken": [("dead", Outcome.permanent("HTTP 400 Bad Request"))],
        },
    )
    story = store.event_story("e-1")
    assert story is not None
    assert story["event"]["data"] == {"n": 1} and story["schema"] == "none" and story["transport"] == "embedded"
    assert story["rules"][0]["rule"] == "paid" and story["rules"][0]["verdict"] == "fired"
    by_channel = {d["channel"]: d for d in story["deliveries"]}
    flaky = by_channel["flaky"]["attempts"]
    assert [a["outcome"] for a in flaky] == ["retry", "sent"]
    assert flaky[0]["status"] == 503 and flaky[0]["retry_at"] is not None and flaky[0]["error_class"] == "http"
    assert by_channel["broken"]["attempts"][0]["status"] == 400
    assert by_channel["broken"]["dead_letter_id"] == "dl-e-1-broken" and by_channel["flaky"]["dead_letter_id"] is None
    assert by_channel["flaky"]["message"] == {"title": "paid e-1", "body": "body", "payload": {"k": 1}}
    assert by_channel["flaky"]["idempotency_key"] == f"{event('e-1').key}:paid:flaky"
    assert story["outcome"] == "dead"
    assert store.event_story("nope") is None


DEFERRED = Outcome("skipped", "deferred 0.05s: channel at its concurrency limit (8)")


def test_a_deferral_written_after_its_retry_does_not_hide_the_send(store: ActivityStore) -> None:
    # Router A defers a delivery; router B runs the retry and writes "sent" first; A's batch
    # (the arrival and the deferral) lands later. The story reads attempts in the order they began.
    now = time.time()
    ev = event("e-deferred")
    record(store, ("a", now + 0.2, delivery(ev, "hook"), Outcome.sent("HTTP 204"), "sent", 0.01, None, None))
    record(
        store,
        ("e", now, ev, 100, "none", "amqp", "a:1"),
        ("v", now, ev.id, "paid", "fired", ""),
        ("a", now, delivery(ev, "hook"), DEFERRED, "skipped", 0.1, None, None),
    )
    story = store.event_story(ev.id)
    assert story is not None
    assert [a["outcome"] for a in story["deliveries"][0]["attempts"]] == ["skipped", "sent"]
    assert story["outcome"] == "sent"
    assert [e["outcome"] for e in store.list_events(Filter())["events"]] == ["sent"]


def test_a_retry_buffered_before_its_deferral_in_one_batch_still_counts_as_sent(store: ActivityStore) -> None:
    now = time.time()
    ev = event("e-one-batch")
    record(
        store,
        ("e", now, ev, 100, "none", "amqp", "a:1"),
        ("v", now, ev.id, "paid", "fired", ""),
        ("a", now + 0.2, delivery(ev, "hook"), Outcome.sent("HTTP 204"), "sent", 0.01, None, None),
        ("a", now, delivery(ev, "hook"), DEFERRED, "skipped", 0.1, None, None),
    )
    assert store.list_events(Filter())["events"][0]["outcome"] == "sent"


def pausing_store(url: str) -> tuple[ActivityStore, threading.Event, threading.Event]:
    """A PostgreSQL store whose writes stop before they commit (``inside`` is set then) until ``go`` is set."""
    from router.activity.postgres_store import PostgresActivityStore

    inside, go = threading.Event(), threading.Event()

    class PausingStore(PostgresActivityStore):
        def _summarise(self, cursor: object, event_ids: set[str]) -> None:
            super()._summarise(cursor, event_ids)
            inside.set()  # its rows are written, not committed
            go.wait(30)

    return PausingStore(url), inside, go


def until_blocked_or_done(postgres_dsn: str, writer: threading.Thread, waiting_locks: str, what: str) -> None:
    """Wait until ``writer`` waits on a lock (``waiting_locks``: a pg_locks condition) or has finished."""
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as watcher:

        def blocked_or_done() -> bool:
            waiting = watcher.execute(f"SELECT count(*) FROM pg_locks WHERE {waiting_locks} AND NOT granted")
            return not writer.is_alive() or waiting.fetchone()[0] > 0  # type: ignore[index]

        until_sync(blocked_or_done, what=what)


@pytest.mark.integration
def test_two_routers_writing_one_event_at_once_agree_on_its_outcome(postgres_dsn: str) -> None:
    """Router B's retry commits while router A writes the event's arrival: A's summary must include it."""
    with private_schema(postgres_dsn, "activity_race") as url:
        router_a = open_store(url)
        router_b, inside, go = pausing_store(url)  # B's rows are written, not committed, until go
        try:
            router_a.open()
            router_b.open()
            now = time.time()
            ev = event("e-race")
            b = threading.Thread(
                target=record,
                args=(
                    router_b,
                    ("a", now + 0.2, delivery(ev, "hook"), Outcome.sent("HTTP 204"), "sent", 0.01, None, None),
                ),
            )
            a = threading.Thread(
                target=record,
                args=(
                    router_a,
                    ("e", now, ev, 100, "none", "amqp", "a:1"),
                    ("v", now, ev.id, "paid", "fired", ""),
                    ("a", now, delivery(ev, "hook"), DEFERRED, "skipped", 0.1, None, None),
                ),
            )
            b.start()
            assert inside.wait(30)
            a.start()
            until_blocked_or_done(postgres_dsn, a, "locktype = 'advisory'", "router A blocked on B's lock, or finished")
            go.set()
            a.join(30)
            b.join(30)
            assert router_a.list_events(Filter())["events"][0]["outcome"] == "sent"
        finally:
            go.set()
            router_a.close()
            router_b.close()


@pytest.mark.integration
def test_one_event_arriving_at_two_routers_at_once_keeps_both_stories(postgres_dsn: str) -> None:
    """Both routers write the event's arrival with a sent attempt; B commits while A waits on the row: A's attempt is kept."""
    with private_schema(postgres_dsn, "activity_twice") as url:
        router_a = open_store(url)
        router_b, inside, go = pausing_store(url)  # B's row is written, not committed, until go
        now = time.time()
        ev = event("e-twice")

        def arrival(at: float, process: str, channel: str) -> tuple[tuple[object, ...], ...]:
            return (
                ("e", at, ev, 100, "none", "amqp", process),
                ("v", at, ev.id, "paid", "fired", ""),
                ("a", at, delivery(ev, channel), Outcome.sent("HTTP 204"), "sent", 0.01, None, None),
            )

        try:
            router_a.open()
            router_b.open()
            b = threading.Thread(target=record, args=(router_b, *arrival(now, "b:1", "from-b")))
            a = threading.Thread(target=record, args=(router_a, *arrival(now + 0.1, "a:1", "from-a")))
            b.start()
            assert inside.wait(30)
            a.start()
            until_blocked_or_done(
                postgres_dsn, a, "locktype = 'transactionid'", "router A blocked on B's row, or finished"
            )
            go.set()
            a.join(30)
            b.join(30)
            story = router_a.event_story(ev.id)
            assert story is not None
            assert sorted(d["channel"] for d in story["deliveries"]) == ["from-a", "from-b"]
            assert router_a.list_events(Filter())["events"][0]["channels"] == {"from-a": "sent", "from-b": "sent"}
        finally:
            go.set()
            router_a.close()
            router_b.close()


@pytest.mark.integration
def test_postgresql_pruning_by_age_refreshes_statistics_and_rewrites_only_over_max_bytes(postgres_dsn: str) -> None:
    """Rows aged out: VACUUM (ANALYZE), so the planner knows the table (docs/activity.md); over max_bytes: VACUUM FULL."""
    import psycopg

    def table_state(url: str) -> tuple[int, object]:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT c.relfilenode, s.last_analyze FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.oid = to_regclass('activity_events')"
            ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    with private_schema(postgres_dsn, "activity_prune") as url:
        opened = open_store(url)
        try:
            opened.open()
            now = time.time()
            for n in range(20):
                story_of(opened, event(f"old-{n}"), now - 7200, {"hook": [("sent", Outcome.sent())]})
            story_of(opened, event("new"), now, {"hook": [("sent", Outcome.sent())]})
            file_before, analyzed_before = table_state(url)
            assert analyzed_before is None

            assert opened.prune(now, 3600, 1 << 30) == 20
            file_after, analyzed_after = table_state(url)
            assert analyzed_after is not None and file_after == file_before  # analyzed, not rewritten

            opened.prune(now, 86400, 1)  # over max_bytes: the oldest go, and the table is rewritten
            assert table_state(url)[0] != file_before
        finally:
            opened.close()


def test_list_filters_counts_and_cursor(store: ActivityStore) -> None:
    now = time.time()
    sent = [("sent", Outcome.sent("HTTP 204"))]
    for n in range(5):
        story_of(store, event(f"ok-{n}", subject=f"order-{n}"), now - 100 + n, {"hook": sent})
    story_of(store, event("bad", type="user.signed_up"), now - 50, {"hook": [("dead", Outcome.permanent("HTTP 400"))]})
    story_of(
        store,
        event("late"),
        now - 40,
        {"mail": [("retry", Outcome.retryable("timeout")), ("sent", Outcome.sent())]},
    )
    record(store, ("e", now - 30, event("old"), 10, "none", "embedded", "test:1"))
    record(store, ("e", now - 7200, event("ancient"), 10, "none", "embedded", "test:1"))

    answer = store.list_events(parse_filter({"since": "1h"}))
    ids = [e["event_id"] for e in answer["events"]]
    assert ids[:3] == ["old", "late", "bad"] and "ancient" not in ids
    assert answer["counts"] == {
        "sent": 6,
        "failed": 2,
        "dead": 1,
        "skipped": 1,
        "pending": 0,
        "dry_run": 0,
        "rejected": 0,
    }
    assert [e["event_id"] for e in store.list_events(parse_filter({"outcome": "dead"}))["events"]] == ["bad"]
    assert {e["event_id"] for e in store.list_events(parse_filter({"outcome": "failed"}))["events"]} == {"bad", "late"}
    assert [e["event_id"] for e in store.list_events(parse_filter({"type": "user.*"}))["events"]] == ["bad"]
    assert [e["event_id"] for e in store.list_events(parse_filter({"channel": "mail"}))["events"]] == ["late"]
    assert [e["event_id"] for e in store.list_events(parse_filter({"q": "order-3"}))["events"]] == ["ok-3"]
    assert [e["event_id"] for e in store.list_events(parse_filter({"q": "bad"}))["events"]] == ["bad"]
    assert store.list_events(parse_filter({"rule": "paid"}))["counts"]["sent"] == 6
    late = store.list_events(parse_filter({"q": "late"}))["events"][0]
    assert late["channels"] == {"mail": "sent"} and late["rules_fired"] == ["paid"] and late["outcome"] == "sent"

    seen: list[str] = []
    params = {"since": "3h", "limit": "3"}
    while True:
        page = store.list_events(parse_filter(params))
        seen += [e["event_id"] for e in page["events"]]
        if page["next"] is None:
            break
        params["before"] = page["next"]
    assert len(seen) == len(set(seen)) == 9 and seen[-1] == "ancient"


@pytest.mark.parametrize("common_rule", [1_000_000, 1], ids=["by-id", "walking-time"])
def test_a_rule_filter_answers_the_same_whichever_way_it_reads(
    store: ActivityStore, common_rule: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rule with many verdicts is filtered by walking the time index, one with few by looking
    # its events up by id (SqlStore._rule_is_common): both must give the same pages and counts.
    monkeypatch.setattr(store_module, "COMMON_RULE", common_rule)
    now = time.time()
    for n in range(7):
        ev = event(f"r-{n}")
        record(
            store,
            ("e", now - 100 + n, ev, 10, "none", "amqp", "a:1"),
            ("v", now - 100 + n, ev.id, "paid" if n % 2 else "audit", "fired", ""),
            ("a", now - 100 + n, delivery(ev, "hook"), Outcome.sent(), "sent" if n != 5 else "dead", 0.01, None, None),
        )
    params = {"since": "1h", "rule": "paid", "limit": "2"}
    seen: list[str] = []
    while True:
        page = store.list_events(parse_filter(params))
        seen += [e["event_id"] for e in page["events"]]
        assert page["counts"]["sent"] == 2 and page["counts"]["dead"] == 1
        if page["next"] is None:
            break
        params["before"] = page["next"]
    assert seen == ["r-5", "r-3", "r-1"]
    dead = store.list_events(parse_filter({"since": "1h", "rule": "paid", "outcome": "dead"}))["events"]
    assert [e["event_id"] for e in dead] == ["r-5"]
    assert store.list_events(parse_filter({"since": "1h", "rule": "nobody"}))["events"] == []


def test_a_channel_named_beyond_ascii_is_found_in_summaries_old_and_new(store: ActivityStore) -> None:
    now = time.time()
    story_of(store, event("new"), now - 20, {"équipe": [("sent", Outcome.sent())]})
    story_of(store, event("other"), now - 10, {"equipe": [("sent", Outcome.sent())]})
    # A summary as versions before 2026-12-03 wrote it: non-ASCII escaped.
    story_of(store, event("old"), now - 30, {"équipe": [("sent", Outcome.sent())]})
    old_summary = json.dumps({"équipe": "sent"})
    assert "\\u00e9" in old_summary
    sql_store = store.reader if isinstance(store, ThroughWriterProcess) else store
    assert isinstance(sql_store, SqlStore)
    conn = sql_store._ensure()
    conn.cursor().execute(
        sql_store._sql("UPDATE activity_events SET channels = ? WHERE event_id = 'old'"), (old_summary,)
    )
    conn.commit()

    found = store.list_events(parse_filter({"channel": "équipe"}))["events"]
    assert sorted(e["event_id"] for e in found) == ["new", "old"]
    assert [e["channels"] for e in found] == [{"équipe": "sent"}] * 2


def test_dead_letters_rules_channels_overview(store: ActivityStore) -> None:
    now = time.time()
    story_of(store, event("d1"), now - 10, {"hook": [("dead", Outcome.permanent("HTTP 400"))]})
    story_of(
        store,
        event("r1"),
        now - 5,
        {"hook": [("retry", Outcome.retryable("HTTP 429 Too Many Requests", 60)), ("sent", Outcome.sent())]},
    )
    dead = store.dead_letters(Filter(since=now - 3600))
    assert [(d["event_id"], d["channel"], d["dead_letter_id"]) for d in dead] == [("d1", "hook", "dl-d1-hook")]
    rules = store.rule_stats(now - 3600)
    assert rules[0]["rule"] == "paid" and rules[0]["fired"] == 2 and rules[0]["last_fired"] is not None
    channel = store.channel_stats(now - 3600, now)[0]
    assert channel["channel"] == "hook" and channel["sent"] == 1 and channel["failed"] == 2
    assert channel["success_ratio"] == pytest.approx(1 / 3, abs=0.01) and channel["p50_ms"] == 12.0
    assert channel["paused_until"] is not None and channel["last_error"] == "HTTP 429 Too Many Requests"
    series = store.overview(now, 3600, 60)
    assert len(series) == 60 and sum(p["events_per_s"] for p in series) * 60 == pytest.approx(2, abs=0.01)


def table_rows(store: ActivityStore, table: str) -> int:
    sql_store = store.reader if isinstance(store, ThroughWriterProcess) else store
    assert isinstance(sql_store, SqlStore)
    return int(sql_store._query(f"SELECT count(*) FROM {table}")[0][0])


def test_short_stories_in_their_event_row_are_told_found_counted_and_joined_later(store: ActivityStore) -> None:
    # A rule fired and its channel sent, all in one batch: the attempts are kept in the event's
    # row (router/activity/inline.py), and every read tells them as if they were rows.
    now = time.time() - 60
    s1, s2 = event("s1"), event("s2")
    sent = Outcome.sent("HTTP 204")
    record(
        store,
        ("e", now, s1, 100, "none", "amqp", "a:1"),
        ("v", now, s1.id, "paid", "fired", ""),
        ("a", now + 0.01, delivery(s1, "hook"), sent, "sent", 0.012, None, None),
        ("e", now + 1, s2, 100, "none", "amqp", "a:1"),
        ("v", now + 1, s2.id, "paid", "fired", ""),
        ("a", now + 1.01, delivery(s2, "mail"), sent, "sent", 0.030, None, None),
    )
    assert table_rows(store, "activity_attempts") == 0 and table_rows(store, "activity_verdicts") == 2
    # Later batches: a delivery of s1 that was deferred past the flush, and a redelivery of s2
    # (its row is already there: this arrival's records are rows of their own).
    record(store, ("a", now + 5, delivery(s1, "late-hook"), sent, "sent", 0.020, None, None))
    record(
        store,
        ("e", now + 6, s2, 100, "none", "amqp", "b:1"),
        ("v", now + 6, s2.id, "paid", "fired", ""),
        ("a", now + 6.01, delivery(s2, "mail", 2), sent, "sent", 0.040, None, None),
    )

    story = store.event_story("s1")
    assert story is not None and story["outcome"] == "sent"
    assert [(r["rule"], r["verdict"]) for r in story["rules"]] == [("paid", "fired")]
    assert [(d["channel"], [a["outcome"] for a in d["attempts"]]) for d in story["deliveries"]] == [
        ("hook", ["sent"]),
        ("late-hook", ["sent"]),
    ]
    assert story["deliveries"][0]["message"] == {"title": "paid s1", "body": "body", "payload": {"k": 1}}
    assert story["deliveries"][0]["attempts"][0]["duration_ms"] == 12.0
    again = store.event_story("s2")
    assert again is not None
    assert [r["verdict"] for r in again["rules"]] == ["fired", "fired"]
    assert [a["attempt"] for a in again["deliveries"][0]["attempts"]] == [1, 2]

    listed = {e["event_id"]: e for e in store.list_events(Filter())["events"]}
    assert listed["s1"]["channels"] == {"hook": "sent", "late-hook": "sent"} and listed["s1"]["rules_fired"] == ["paid"]
    assert {e["event_id"] for e in store.list_events(parse_filter({"rule": "paid"}))["events"]} == {"s1", "s2"}
    assert store.list_events(parse_filter({"rule": "Paid"}))["events"] == []
    assert [e["event_id"] for e in store.list_events(parse_filter({"channel": "late-hook"}))["events"]] == ["s1"]

    rules = store.rule_stats(now - 10)
    assert [(r["rule"], r["matched"], r["fired"], r["skipped"]) for r in rules] == [("paid", 2, 3, 0)]
    assert rules[0]["last_fired"] is not None
    channels = {c["channel"]: c for c in store.channel_stats(now - 10, now + 60)}
    assert {name: c["sent"] for name, c in channels.items()} == {"hook": 1, "late-hook": 1, "mail": 2}
    assert channels["hook"]["p50_ms"] == 12.0 and channels["mail"]["p99_ms"] == 40.0
    assert channels["hook"]["type"] == "webhook" and channels["hook"]["success_ratio"] == 1.0
    series = store.overview(now + 60, 3600, 60)
    assert sum(p["deliveries_per_s"].get("sent", 0) for p in series) * 60 == pytest.approx(4, abs=0.01)
    assert {p["latency_p99_ms"] for p in series} >= {40.0}

    store.prune(now + 86400, 60, 1 << 30)
    assert store.rule_stats(0) == [] and store.channel_stats(0, now) == []
    assert table_rows(store, "activity_tallies") == 0


def test_channel_latency_reads_only_the_newest_sends_of_short_stories(
    store: ActivityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The durations of sends kept in their event's row are sampled newest first, PERCENTILE_SAMPLE
    # of them (a bounded cost whatever the traffic): an old slow send falls out of the sample.
    monkeypatch.setattr(store_module, "PERCENTILE_SAMPLE", 2)
    now = time.time()
    for n, (ago, seconds) in enumerate([(30, 0.100), (20, 0.010), (10, 0.020)]):
        ev = event(f"lat-{n}")
        record(
            store,
            ("e", now - ago, ev, 10, "none", "amqp", "a:1"),
            ("v", now - ago, ev.id, "paid", "fired", ""),
            ("a", now - ago, delivery(ev, "hook"), Outcome.sent(), "sent", seconds, None, None),
        )
    hook = store.channel_stats(now - 3600, now)[0]
    assert hook["sent"] == 3 and hook["p99_ms"] == 20.0 and hook["p50_ms"] == 10.0


def test_flow_control_verdicts_and_jobs(store: ActivityStore) -> None:
    now = time.time()
    ev = event("f1")
    record(
        store,
        ("e", now, ev, 1, "ok", "amqp", "test:1"),
        ("v", now, "f1", "paid", "deduped", "duplicate"),
        ("v", now, "f1", "audit", "fired", ""),
        ("j", now, "f1", "audit", "audit_log", "dead", "exhausted: job audit_log raised KeyError"),
    )
    story = store.event_story("f1")
    assert story is not None
    assert [(r["rule"], r["verdict"]) for r in story["rules"]] == [("paid", "deduped"), ("audit", "fired")]
    assert story["jobs"][0]["outcome"] == "dead" and story["outcome"] == "dead"


def rejected(event_id: str, at: float, reason: str, error: str, **extra: object) -> tuple[object, ...]:
    """A recorder item for a rejected message, as Recorder.rejected buffers it."""
    return (
        "r",
        at,
        event_id,
        extra.get("size", 9),
        reason,
        error,
        extra.get("letter"),
        extra.get("event"),
        extra.get("routing_key"),
        "embedded",
        "test:1",
    )


def test_rejected_messages_are_listed_filtered_and_told(store: ActivityStore) -> None:
    now = time.time()
    refused = event("bad-1", type="user.created", subject="u-1", n="x")
    record(
        store,
        rejected(
            "poison-abc",
            now,
            "poison",
            "body is not JSON: Expecting value at line 1 column 1",
            letter="dl-1",
            routing_key="order.paid",
            size=8,
        ),
        rejected("bad-1", now + 1, "schema", "data.n: 'x' is not of type 'integer'", letter="dl-2", event=refused),
    )
    story_of(store, event("ok-1"), now + 2, {"hook": [("sent", Outcome.sent())]})
    # The failure notification of the schema failure is delivered under the event's id: its
    # attempt is part of the story, and does not turn the rejection into a delivery outcome.
    note = Delivery(refused, "on_failure", "ops", "console", Message("failed", "b"), 1)
    record(store, ("a", now + 3, note, Outcome.sent(), "sent", 0.01, None, None))

    answer = store.list_events(Filter())
    by_id = {e["event_id"]: e for e in answer["events"]}
    assert by_id["poison-abc"]["outcome"] == "rejected" and by_id["bad-1"]["outcome"] == "rejected"
    assert by_id["poison-abc"]["rejection"] == {
        "reason": "poison",
        "error": "body is not JSON: Expecting value at line 1 column 1",
        "dead_letter_id": "dl-1",
    }
    assert by_id["poison-abc"]["type"] == "order.paid" and by_id["poison-abc"]["size"] == 8
    assert by_id["poison-abc"]["schema"] is None and by_id["bad-1"]["schema"] == "refused"
    assert by_id["ok-1"]["rejection"] is None
    assert answer["counts"]["rejected"] == 2 and answer["counts"]["sent"] == 1 and answer["counts"]["failed"] == 0
    only = store.list_events(parse_filter({"outcome": "rejected"}))
    assert sorted(e["event_id"] for e in only["events"]) == ["bad-1", "poison-abc"]
    assert [e["event_id"] for e in store.list_events(parse_filter({"type": "order.*"}))["events"]] == [
        "ok-1",
        "poison-abc",
    ]

    poison = store.event_story("poison-abc")
    assert poison is not None
    assert poison["event"] == {"id": "poison-abc", "routing_key": "order.paid"}
    assert poison["outcome"] == "rejected" and poison["rejection"]["dead_letter_id"] == "dl-1"
    schema = store.event_story("bad-1")
    assert schema is not None
    assert schema["event"]["type"] == "user.created" and schema["event"]["subject"] == "u-1"
    assert schema["outcome"] == "rejected" and schema["rejection"]["reason"] == "schema"
    assert [d["channel"] for d in schema["deliveries"]] == ["ops"]


def test_a_rejected_event_that_comes_back_tells_its_new_story(store: ActivityStore) -> None:
    now = time.time()
    ev = event("again", n=1)
    record(store, rejected("again", now, "schema", "data.n: wrong", letter="dl-1", event=ev))
    record(store, rejected("again", now + 1, "schema", "data.n: still wrong", letter="dl-2", event=ev))
    story = store.event_story("again")
    assert story is not None and story["rejection"]["dead_letter_id"] == "dl-2"
    assert story["rejection"]["error"] == "data.n: still wrong"
    # Replayed once its schema was fixed: routed and sent, no longer rejected.
    story_of(store, ev, now + 2, {"hook": [("sent", Outcome.sent())]})
    story = store.event_story("again")
    assert story is not None and story["outcome"] == "sent" and story["rejection"] is None
    assert story["schema"] == "none"
    # A routed event's row is never replaced by a later rejection of the same id.
    record(store, rejected("again", now + 3, "schema", "data.n: wrong", letter="dl-3", event=ev))
    assert store.list_events(parse_filter({"q": "again"}))["events"][0]["outcome"] == "sent"


def test_a_large_batch_with_an_id_twice_is_written_whole_and_in_order(store: ActivityStore) -> None:
    """Rows go in many to a statement: a batch larger than one statement holds is written
    whole, and an id seen twice in one batch (a rejection, then the same event routed once
    fixed) keeps the later story, as one row at a time would (PostgreSQL refuses to update a
    row twice in one statement)."""
    now = time.time()
    items: list[tuple[object, ...]] = []
    for n in range(300):  # several statements' worth of events, verdicts and attempts
        ev = event(f"bulk-{n}", n=n)
        items += [
            ("e", now, ev, 10, "none", "embedded", "test:1"),
            ("v", now, ev.id, "paid", "fired", ""),
            ("a", now + 0.001, delivery(ev, "hook"), Outcome.sent(), "sent", 0.01, None, None),
        ]
    twice = event("twice", n=1)
    items += [
        rejected("twice", now, "schema", "data.n: wrong", letter="dl-1", event=twice),
        ("e", now + 1, twice, 10, "none", "embedded", "test:1"),
        ("v", now + 1, "twice", "paid", "fired", ""),
        ("a", now + 1.001, delivery(twice, "hook"), Outcome.sent(), "sent", 0.01, None, None),
    ]
    record(store, *items)
    listed = store.list_events(Filter(limit=500))
    assert len(listed["events"]) == 301 and listed["counts"]["sent"] == 301
    assert {row["outcome"] for row in listed["events"]} == {"sent"}
    story = store.event_story("twice")
    assert story is not None and story["outcome"] == "sent" and story["rejection"] is None
    last = store.event_story("bulk-299")
    assert last is not None and [d["channel"] for d in last["deliveries"]] == ["hook"]


def test_a_rejection_keeps_no_bytes_and_no_secret(store: ActivityStore) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    register_secrets(secret)
    long_reason = f"the decoder failed near https://user:{secret}@example.com/x " + "y" * 1000
    record(store, rejected("poison-long", time.time(), "poison", long_reason))
    story = store.event_story("poison-long")
    assert story is not None
    error = story["rejection"]["error"]
    assert secret not in repr(story) and len(error) <= 300 and error.endswith("...")


def test_a_store_written_before_rejections_gains_their_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the events table as the first release created it
        conn.execute(
            """CREATE TABLE activity_events (
            event_id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, source TEXT, subject TEXT,
            transport TEXT, process TEXT, size INTEGER, schema_verdict TEXT, outcome TEXT NOT NULL,
            failed INTEGER NOT NULL DEFAULT 0, channels TEXT NOT NULL DEFAULT '{}',
            rules_fired TEXT NOT NULL DEFAULT '[]', envelope TEXT)"""
        )
        conn.execute(
            "INSERT INTO activity_events (event_id, at, type, outcome) VALUES ('old', ?, 'a.b', 'sent')", (time.time(),)
        )
    store = open_store(f"sqlite:///{path}")
    store.open()
    try:
        record(store, rejected("poison-new", time.time(), "oversize", "body of 9 bytes exceeds 8"))
        listed = {e["event_id"]: e for e in store.list_events(Filter())["events"]}
        assert listed["old"]["rejection"] is None and listed["old"]["outcome"] == "sent"
        assert listed["poison-new"]["rejection"]["reason"] == "oversize"
    finally:
        store.close()


def test_no_registered_secret_is_stored(store: ActivityStore) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    register_secrets(secret)
    ev = event("sec", token=secret)
    story_of(store, ev, time.time(), {"hook": [("sent", Outcome.sent())]})
    story = store.event_story("sec")
    assert secret not in repr(story) and "***" in repr(story)


def test_retention_by_age_and_size(store: ActivityStore) -> None:
    now = time.time()
    story_of(store, event("too-old"), now - 10 * 86400, {"hook": [("sent", Outcome.sent())]})
    story_of(store, event("recent"), now - 60, {"hook": [("sent", Outcome.sent())]})
    store.prune(now, 7 * 86400, 1 << 40)
    assert store.event_story("too-old") is None and store.event_story("recent") is not None

    big = "x" * 2000
    for chunk in range(6):
        batch = Batch()
        items = [
            ("e", now - 3600 + chunk * 100 + n * 0.01, event(f"b{chunk}-{n}", blob=big), 2000, "none", "embedded", "t")
            for n in range(500)
        ]
        batch = build_batch(list(items))
        store.write(batch)
    before = store.size_bytes()
    limit = max(1 << 20, before // 2)
    store.prune(now, 7 * 86400, limit)
    assert store.size_bytes() <= limit, (before, store.size_bytes(), limit)
    newest = store.list_events(Filter(since=now - 7200, limit=1))["events"][0]["event_id"]
    assert newest == "recent", "the oldest events go first"


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    opened = open_store(f"sqlite:///{tmp_path / 'sub' / 'activity.db'}")
    opened.open()
    opened.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "activity.db").st_mode)
    assert mode == 0o600
