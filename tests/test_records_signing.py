"""Retry records and dead letters are signed by the router (router/core/signing.py) and checked
against the configuration in force: a forged one is dead-lettered with reason ``forged`` and
never delivered. On RabbitMQ, the least-privilege set-up of README.md ("Least privilege on
RabbitMQ") keeps publishers off the router's queues altogether.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiormq
import pytest

from router import Publisher
from router.core import signing
from router.core.message import Message
from router.core.records import ForgedRecord, RetryRecord
from router.core.signing import KeyRing, load_keyring
from tests.builders import make_event
from tests.fakes.http_sink import HttpSink
from tests.serve_support import ROUTER, RouterProcess, amqp_rules, delete_topology, unique_names
from tests.test_serve_embedded import run_cli, setup_project

# --- the key ring


def record() -> RetryRecord:
    event = make_event({"n": 1}, type="user.signed_up", id="e1", source="test", time=datetime.now(UTC))
    return RetryRecord("delivery", event, "signup", 1, channel="mail", message=Message("t", "b"))


def test_a_record_round_trips_and_any_change_to_it_is_refused() -> None:
    body = record().to_bytes()
    assert body.startswith(b"RR1.")
    assert RetryRecord.from_bytes(body).channel == "mail"
    with pytest.raises(ForgedRecord, match="does not match"):
        RetryRecord.from_bytes(body.replace(b'"mail"', b'"bill"'))
    with pytest.raises(ForgedRecord, match="not signed"):
        RetryRecord.from_bytes(body.split(b".", 3)[3])  # the bare JSON, as the attacker sent it
    with pytest.raises(ForgedRecord, match="does not hold"):
        RetryRecord.from_bytes(KeyRing(os.urandom(32)).sign(body.split(b".", 3)[3]))


def test_rotation_keeps_previous_keys_for_verification_only() -> None:
    old, new = os.urandom(32), os.urandom(32)
    signed_with_old = KeyRing(old).sign(b"{}")
    rotated = KeyRing(new, [old])
    assert rotated.open(signed_with_old) == b"{}"
    assert rotated.sign(b"{}").startswith(b"RR1." + signing.key_id(new))
    with pytest.raises(ForgedRecord):
        KeyRing(new).open(signed_with_old)  # the grace period is over


def test_the_key_file_is_created_private_once_and_the_environment_wins(tmp_path: Path) -> None:
    folder = tmp_path / ".router"
    first = load_keyring(folder, env={})
    assert stat.S_IMODE((folder / "record.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert load_keyring(folder, env={}).current == first.current  # the same key after a restart
    env = {"ROUTER_RECORD_KEY": "n" * 32, "ROUTER_RECORD_KEYS_PREVIOUS": "o" * 32}
    ring = load_keyring(folder, env=env)
    assert ring.current == b"n" * 32 and ring.open(KeyRing(b"o" * 32).sign(b"x")) == b"x"
    with pytest.raises(ValueError, match="ROUTER_RECORD_KEY must be at least 16"):
        load_keyring(folder, env={"ROUTER_RECORD_KEY": "short"})
    (folder / "record.key").write_text("zz\n")
    with pytest.raises(ValueError, match=r"record.key:1: not a hex key"):
        load_keyring(folder, env={})


# --- against a real `router serve` on RabbitMQ with least-privilege users


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def least_privilege(rabbitmq_url: str) -> Iterator[dict[str, str]]:
    """A private vhost with the router's user (its exchange and queues) and a publisher's
    (write to the exchange only), as README.md documents; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    names = {
        "vhost": f"rt-sign-{tag}",
        "exchange": "events",
        "queue": "router",
        "router_user": f"rt-router-{tag}",
        "publisher_user": f"rt-pub-{tag}",
        "password": uuid.uuid4().hex,
    }
    rabbitmqctl("add_vhost", names["vhost"])
    try:
        for user in (names["router_user"], names["publisher_user"]):
            rabbitmqctl("add_user", user, names["password"])
        own = r"^(events|router|router\..*)$"
        rabbitmqctl("set_permissions", "-p", names["vhost"], names["router_user"], own, own + r"|^amq\.default$", own)
        rabbitmqctl("set_permissions", "-p", names["vhost"], names["publisher_user"], "^events$", "^events$", "^$")
        yield names
    finally:
        for user in (names["router_user"], names["publisher_user"]):
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", names["vhost"]], capture_output=True, timeout=60)


def url(names: dict[str, str], user: str) -> str:
    return f"amqp://{names[user]}:{names['password']}@127.0.0.1:5672/{names['vhost']}"


def forged_payload(rule: str, channel: str) -> bytes:
    event = {"specversion": "1.0", "id": "forged-1", "source": "x", "type": "user.signed_up", "data": {}}
    message = {"title": "invoice", "body": "pay to attacker", "meta": {}}
    fields = {"v": 1, "kind": "delivery", "event": event, "rule": rule, "attempt": 0, "channel": channel}
    return json.dumps({**fields, "message": message}).encode()


@pytest.mark.integration
async def test_forged_retry_records_are_dead_lettered_and_publishers_cannot_reach_the_queues(
    tmp_path: Path, least_privilege: dict[str, str]
) -> None:
    names = least_privilege
    async with HttpSink() as welcome, HttpSink() as billing:
        setup_project(
            tmp_path,
            f"""
version: 1
broker: {{url: "{url(names, "router_user")}"}}
state: {{url: "sqlite:///state.db"}}
channels:
  welcome: {{type: webhook, url: '{welcome.url}'}}
  billing: {{type: webhook, url: '{billing.url}'}}
rules:
  - {{name: signup, on: user.signed_up, template: note, channels: [welcome]}}
  - {{name: invoice, on: invoice.paid, template: note, channels: [billing]}}
""",
        )
        router = await RouterProcess(tmp_path).start()
        try:
            # The publisher's documented client works with its permissions.
            async with Publisher(url(names, "publisher_user"), source="app") as publisher:
                await publisher.publish("user.signed_up", {"n": 1}, id="genuine-1")
            await welcome.wait_for(1)

            # ... but it cannot put anything on the router's retry queue (no write on the default exchange).
            connection = await aio_pika.connect(url(names, "publisher_user"))
            try:
                channel = await connection.channel(publisher_confirms=True)
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await channel.default_exchange.publish(
                        aio_pika.Message(forged_payload("signup", "billing")), routing_key="router.retry"
                    )
            finally:
                await connection.close()

            # Someone who can (a leaked router password, a guest/.* set-up): unsigned, signed with
            # another key, and signed with the router's own key for a channel the rule does not use.
            own = load_keyring(tmp_path / ".router", env={})
            attempts = [
                forged_payload("signup", "billing"),
                KeyRing(os.urandom(32)).sign(forged_payload("signup", "billing")),
                own.sign(forged_payload("signup", "billing")),
            ]
            connection = await aio_pika.connect(url(names, "router_user"))
            try:
                channel = await connection.channel(publisher_confirms=True)
                for body in attempts:
                    await channel.default_exchange.publish(aio_pika.Message(body), routing_key="router.retry")
            finally:
                await connection.close()

            deadline = time.monotonic() + 20
            while len([r for r in router.log_records() if r.get("reason") == "forged"]) < 3:
                assert time.monotonic() < deadline, router.logs()[-3000:]
                await asyncio.sleep(0.05)
            assert billing.requests == [], "a forged record was delivered"
            assert [r.json()["meta"]["event_id"] for r in welcome.requests] == ["genuine-1"]

            listed = json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))
            assert sorted(letter["reason"] for letter in listed) == ["forged"] * 3
            # A replay never launders a forged letter into a delivery.
            process = await _cli(tmp_path, "dlq", "replay", "--all")
            assert process[0] == 1 and "not replayed" in process[1]
            assert billing.requests == []
        finally:
            await router.stop()


async def _cli(root: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        ROUTER, *args, cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, (out + err).decode()


# --- forged job records (a throttled job coming back, a digest's batch) on a real `router serve`


def job_payload(rule: str, event_id: str, flow: dict[str, object], batch: tuple[str, ...] = ()) -> bytes:
    """A job record as router/flow/resume.py writes one: ``flow`` says how far flow control got;
    ``batch`` makes it a digest's (the job runs once for all those events)."""

    def event(ident: str) -> dict[str, object]:
        return {"specversion": "1.0", "id": ident, "source": "x", "type": "user.signed_up", "data": {"n": 7}}

    fields: dict[str, object] = {"v": 1, "kind": "job", "event": event(event_id), "rule": rule, "attempt": 0}
    fields["extra"] = {"flow": flow}
    if batch:
        fields["events"] = [event(ident) for ident in batch]
    return json.dumps(fields).encode()


@pytest.mark.integration
async def test_forged_throttle_and_digest_job_records_are_dead_lettered_and_never_run(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    names = unique_names()
    retry_queue = f"{names['queue']}.retry"

    def throttled(event_id: str) -> bytes:  # its slot has come: the job would run at once
        return job_payload("signup", event_id, {"stage": "waiting", "slot": time.time() - 1})

    def digest(event_id: str) -> bytes:  # a flushed digest: every decision made, the batch runs
        return job_payload("daily", event_id, {"stage": "admitted"}, (event_id, f"{event_id}-b"))

    async with HttpSink() as welcome, HttpSink() as billing:
        setup_project(
            tmp_path,
            amqp_rules(
                rabbitmq_url,
                names=names,
                channels=f"  welcome: {{type: webhook, url: '{welcome.url}'}}\n"
                f"  billing: {{type: webhook, url: '{billing.url}'}}",
                rules="  - {name: signup, on: user.signed_up, template: note, channels: [welcome],\n"
                "     throttle: {limit: 100, period: 1m}}\n"
                "  - {name: daily, on: report.ready, template: note, channels: [billing],\n"
                "     digest: {window: 1h, max_events: 50}}",
            ),
        )
        router = await RouterProcess(tmp_path).start()
        try:
            wrong = KeyRing(os.urandom(32))
            forged = [
                throttled("forged-throttle-unsigned"),
                wrong.sign(throttled("forged-throttle-wrong-key")),
                digest("forged-digest-unsigned"),
                wrong.sign(digest("forged-digest-wrong-key")),
            ]
            # The same records signed with the router's own key do run: the path is live, so
            # nothing arriving below is the signature check's doing, not a record the job ignores.
            own = load_keyring(tmp_path / ".router", env={})
            genuine = [own.sign(throttled("signed-throttle")), own.sign(digest("signed-digest"))]
            connection = await aio_pika.connect(rabbitmq_url)
            try:
                channel = await connection.channel(publisher_confirms=True)
                for body in [*forged, *genuine]:
                    await channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=retry_queue,
                    )
            finally:
                await connection.close()

            await welcome.wait_for(1)
            await billing.wait_for(1)
            deadline = time.monotonic() + 20
            while len([r for r in router.log_records() if r.get("reason") == "forged"]) < len(forged):
                assert time.monotonic() < deadline, router.logs()[-3000:]
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # time for a wrongly accepted record to arrive as well

            assert [r.json()["meta"]["event_id"] for r in welcome.requests] == ["signed-throttle"]
            [sent_digest] = billing.requests
            assert sent_digest.json()["meta"]["digest"]["events"] == ["signed-digest", "signed-digest-b"]

            listed = json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))
            assert sorted(letter["reason"] for letter in listed) == ["forged"] * len(forged)
            process = await _cli(tmp_path, "dlq", "replay", "--all")
            assert process[0] == 1 and "not replayed" in process[1]
            await asyncio.sleep(0.5)
            assert len(welcome.requests) == 1 and len(billing.requests) == 1, "a forged job record ran"
        finally:
            await router.stop()
            await delete_topology(rabbitmq_url, names)
