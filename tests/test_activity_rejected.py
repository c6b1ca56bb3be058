"""Messages that never become a routed event, in the activity (docs/activity.md, "Rejected messages"):
undecodable and oversize bytes and an event failing its declared schema, published to a real
`router serve` and found with `router activity`, `router trace` and the JSON API; the same on
RabbitMQ under the publisher's message id; and a flood of them bounded by the recorder's buffer.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from router.activity.recorder import Recorder
from router.activity.sqlite_store import SqliteActivityStore
from router.activity.store import Filter
from router.core.events import Event
from router.support.metrics import Metrics
from router.transports.embedded import EmbeddedTransport
from tests.builders import event_bytes
from tests.polling import until
from tests.serve_support import RouterProcess, amqp_rules, delete_topology, publish_amqp, unique_names
from tests.test_activity_serve import SCHEMA
from tests.test_serve_embedded import embedded_rules, post_events, run_cli, setup_project

SCHEMAS = "events:\n  user.created:\n    name: string\n    age: integer\n"
POISON = b"\xff\xfe not json at all, with a password=hunter2"


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


def poison_id(body: bytes) -> str:
    """The id the activity gives a message with no id of its own (its failure notification's)."""
    return "poison-" + hashlib.sha256(body).hexdigest()[:32]


async def api(router: RouterProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def listed(router: RouterProcess, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The rejected events of the list, once every id in ``wanted`` is there."""
    found: dict[str, dict[str, Any]] = {}

    async def present() -> bool:
        nonlocal found
        answer = await api(router, "/api/activity?outcome=rejected")
        found = {event["event_id"]: event for event in answer["events"]}
        return wanted <= set(found)

    try:
        await until(present, f"rejected events {sorted(wanted)} in /api/activity", timeout=30)
    except AssertionError as error:
        raise AssertionError(f"{error}; found {sorted(found)}; log:\n{router.logs()[-3000:]}") from None
    return found


async def test_poison_oversize_and_schema_failures_are_in_the_activity(
    tmp_path: Path,
    routers: list[RouterProcess],
) -> None:
    setup_project(
        tmp_path,
        embedded_rules(
            "  out: {type: console}",
            "  - {name: users, on: 'user.*', template: note, channels: [out]}",
            broker="{max_body_bytes: 4000}",
        )
        + SCHEMAS,
    )
    router = await RouterProcess(tmp_path).start()
    routers.append(router)
    await post_events(router, {"type": "user.created", "id": "u-bad", "subject": "sub-1", "data": {"name": 7, "n": 1}})
    await post_events(router, {"type": "user.created", "id": "u-good", "data": {"name": "Ada", "age": 36, "n": 1}})
    # Undecodable and oversize bytes, as another writer of the queue file (or a broken client) leaves them.
    big = event_bytes("user.created", "u-big", {"pad": "x" * 5000})
    queue = EmbeddedTransport(tmp_path / ".router" / "queue.db")
    await queue.connect()
    try:
        await queue.publish_event(POISON, routing_key="user.created")
        await queue.publish_event(POISON, routing_key="user.created")  # the same bytes again: one entry
        await queue.publish_event(big, routing_key="user.created")
    finally:
        await queue.close()

    letters: dict[str, dict[str, Any]] = {}

    async def four_letters() -> bool:
        nonlocal letters
        letters = {letter["id"]: letter for letter in json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))}
        return len(letters) == 4

    await until(four_letters, "four dead letters (a schema failure, poison twice, oversize)", timeout=30)
    rejected = await listed(router, {"u-bad", poison_id(POISON), poison_id(big)})
    assert len(rejected) == 3
    schema_failure = rejected["u-bad"]
    assert schema_failure["outcome"] == "rejected" and schema_failure["type"] == "user.created"
    assert schema_failure["subject"] == "sub-1" and schema_failure["schema"] == "refused"
    assert schema_failure["rejection"]["reason"] == "schema" and "age" in schema_failure["rejection"]["error"]
    assert letters[schema_failure["rejection"]["dead_letter_id"]]["event_id"] == "u-bad"
    poison = rejected[poison_id(POISON)]
    assert poison["rejection"]["reason"] == "poison" and "UTF-8" in poison["rejection"]["error"]
    assert poison["size"] == len(POISON) and poison["type"] == "user.created" and poison["schema"] is None
    assert letters[poison["rejection"]["dead_letter_id"]]["reason"] == "poison"
    oversize = rejected[poison_id(big)]
    assert oversize["rejection"]["reason"] == "oversize" and oversize["size"] == len(big)

    # The good event is routed as before; the list's counts and the documented schema hold.
    answer = await api(router, "/api/activity")
    assert {e["event_id"]: e["outcome"] for e in answer["events"]}["u-good"] == "sent"
    assert answer["counts"]["rejected"] == 3 and answer["counts"]["failed"] == 0
    jsonschema.validate(answer, json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())

    story = await api(router, f"/api/events/{poison_id(POISON)}")
    assert story["outcome"] == "rejected" and story["rules"] == [] and story["deliveries"] == []
    assert story["event"] == {"id": poison_id(POISON), "routing_key": "user.created"}
    assert "hunter2" not in json.dumps(story) + json.dumps(answer), "the bytes of a poison message are not kept"
    story = await api(router, "/api/events/u-bad")
    assert story["event"]["data"] == {"name": 7, "n": 1} and story["rejection"]["reason"] == "schema"
    assert story["rules"] == [], "a rejected event was never matched: no not_matched verdicts"

    # The CLI: the store directly, and through the API.
    table = await run_cli(tmp_path, "activity", "--outcome", "rejected")
    assert "u-bad" in table and poison_id(POISON) in table and "u-good" not in table
    assert "rejected (schema: " in table and "rejected (poison: " in table and "rejected: 3" in table
    via_api = json.loads(await run_cli(tmp_path, "activity", "--json", "--outcome", "rejected", "--url", router.url))
    assert {e["event_id"] for e in via_api["events"]} == set(rejected)
    trace = await run_cli(tmp_path, "trace", poison_id(POISON))
    assert "rejected (poison): body is not UTF-8" in trace and "schema: not checked" in trace, trace
    assert poison["rejection"]["dead_letter_id"] in trace and "outcome: rejected" in trace
    trace = await run_cli(tmp_path, "trace", "u-bad", "--url", router.url)
    assert "rejected (schema)" in trace and "not_matched" not in trace, trace

    # Once the schema is fixed (a reload), `router replay --outcome rejected` sends the schema
    # failure through again and its story becomes a delivery; poison has no event to replay.
    (tmp_path / "rules.yaml").write_text((tmp_path / "rules.yaml").read_text().replace(SCHEMAS, ""))
    router.signal(signal.SIGHUP)
    await router.wait_for_log(lambda r: r.get("msg") == "configuration reloaded")
    done = await run_cli(tmp_path, "replay", "--outcome", "rejected", "--yes")
    assert "replayed 1 dead letter(s) of 3 event(s); 2 event(s) had none left" in done, done

    async def delivered() -> bool:
        story = await api(router, "/api/events/u-bad")
        return story["outcome"] == "sent" and story["rejection"] is None

    await until(delivered, "the replayed schema failure delivered", timeout=30)


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


@pytest.mark.integration
async def test_a_poison_message_on_rabbitmq_is_found_by_its_message_id(
    tmp_path: Path,
    rabbitmq_url: str,
    names: dict[str, str],
    routers: list[RouterProcess],
) -> None:
    setup_project(
        tmp_path,
        amqp_rules(
            rabbitmq_url,
            channels="  out: {type: console}",
            rules="  - {name: users, on: 'user.*', template: note, channels: [out]}",
            names=names,
            extra=SCHEMAS,
        ),
    )
    router = await RouterProcess(tmp_path).start()
    routers.append(router)
    await publish_amqp(rabbitmq_url, names["exchange"], [("user.created", POISON)], message_id="sent-by-me-1")
    rejected = await listed(router, {"sent-by-me-1"})
    assert rejected["sent-by-me-1"]["rejection"]["reason"] == "poison"
    assert rejected["sent-by-me-1"]["transport"] == "amqp"
    letters = json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))
    assert rejected["sent-by-me-1"]["rejection"]["dead_letter_id"] in {letter["id"] for letter in letters}
    trace = await run_cli(tmp_path, "trace", "sent-by-me-1")
    assert "rejected (poison)" in trace, trace


async def test_a_flood_of_rejections_is_bounded_by_the_buffer(tmp_path: Path) -> None:
    metrics = Metrics()
    store = SqliteActivityStore(tmp_path / "activity.db")
    recorder = Recorder(store, metrics=metrics, transport="embedded", capacity=100, interval=60)
    await recorder.start()
    try:
        refused = Event("user.created", "u-1", "s", datetime.now(UTC), {"pad": "x" * 100})
        for n in range(1000):
            recorder.rejected(f"poison-{n}", size=10, reason="poison", error="body is empty", dead_letter_id=None)
            recorder.rejected(f"s-{n}", size=10, reason="schema", error="no", dead_letter_id="d", event=refused)
        assert metrics.activity_dropped.get() == 1900, "beyond the buffer, rejections are dropped and counted"
        await recorder.flush()
        assert store.list_events(Filter(limit=1))["counts"]["rejected"] == 100
    finally:
        await recorder.close()


async def test_forged_and_unreadable_retry_records_are_rejected_under_their_own_id(tmp_path: Path) -> None:
    from router.transports.base import Incoming
    from tests.engine_support import start_harness
    from tests.test_records_signing import forged_payload

    rules = (
        "version: 1\nchannels: {out: {type: recorder}}\n"
        "rules: [{name: signup, on: user.signed_up, template: t, channels: [out]}]\n"
    )
    harness = await start_harness(tmp_path, rules, {"t.j2": "{% block title %}t{% endblock %}"})
    store = SqliteActivityStore(tmp_path / "activity.db")
    recorder = Recorder(store, metrics=harness.metrics, transport="embedded", interval=60)
    await recorder.start()
    harness.engine.activity = recorder  # the path under test reads it per message
    try:
        forged = forged_payload("signup", "out")  # claims event forged-1, unsigned
        for body in (forged, b"\x00 not a record"):
            await harness.engine.handle(Incoming(kind="retry", body=body, headers={"x-router-event-id": "victim"}))
        await recorder.flush()
        listed = {e["event_id"]: e for e in store.list_events(Filter(outcome="rejected"))["events"]}
        assert set(listed) == {poison_id(forged), poison_id(b"\x00 not a record")}
        # The signature is checked first: bytes that are no record at all fail it too.
        assert {e["rejection"]["reason"] for e in listed.values()} == {"forged"}
        letters = {letter.id for letter in await harness.transport.dlq_list()}
        assert {e["rejection"]["dead_letter_id"] for e in listed.values()} <= letters
        assert store.event_story("victim") is None and store.event_story("forged-1") is None
    finally:
        await recorder.close()
        await harness.close()
