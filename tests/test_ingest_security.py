"""Authenticated ingest (`ingest.auth`): bearer tokens and HMAC signatures on POST /events.

In process, the aiohttp app runs on a real embedded queue; the whole-router tests run
`router serve` as a subprocess with the token in its environment, as users deploy it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.config.models import RouterConfig
from router.core.errors import ConfigError
from router.core.redact import registered_secrets
from router.ingest.auth import IngestGuard, sign
from router.ingest.http import build_app
from router.plugins.manager import build_registry, get_plugin_manager
from router.support.metrics import Metrics
from router.transports.embedded import EmbeddedTransport
from tests.fakes.http_sink import HttpSink
from tests.serve_support import ROUTER, RouterProcess

TOKEN = "tok-" + "a1b2c3d4e5f6a7b8c9d0"
OTHER_TOKEN = "tok-" + "ffeeddccbbaa99887766"
SECRET = "hmac-" + "0123456789abcdef0123"
EVENT = {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}}


class Holder:
    """The configuration in force, replaced the way a reload replaces it."""

    def __init__(self, ingest: dict[str, Any]) -> None:
        self.config = RouterConfig.model_validate({"ingest": ingest})

    def set(self, ingest: dict[str, Any]) -> None:
        self.config = RouterConfig.model_validate({"ingest": ingest})


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[EmbeddedTransport]:
    transport = EmbeddedTransport(tmp_path / "queue.db")
    await transport.connect()
    yield transport
    await transport.close()


@pytest.fixture
def holder() -> Holder:
    return Holder({"auth": {"bearer": TOKEN}})


@pytest.fixture
async def client(queue: EmbeddedTransport, holder: Holder) -> AsyncIterator[TestClient[Any, Any]]:
    guard = IngestGuard(lambda: holder.config, max_event_bytes=65536)
    app = build_app(
        transport=queue, metrics=Metrics(), is_ready=lambda: True, max_event_bytes=65536, ingest=guard.settings
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def post(
    client: TestClient[Any, Any], body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    async with client.post("/events", data=body, headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, await r.json(), r.headers


BODY = json.dumps(EVENT).encode()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "authentication required: send 'Authorization: Bearer <token>'", id="none"),
        pytest.param({"Authorization": f"Bearer {OTHER_TOKEN}"}, "invalid bearer token", id="wrong"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, "invalid bearer token", id="prefix"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, "must use the Bearer scheme", id="basic"),
        pytest.param({"Authorization": "Bearer"}, "invalid bearer token", id="empty"),
    ],
)
async def test_a_request_without_the_right_bearer_token_gets_401_and_enqueues_nothing(
    client: TestClient[Any, Any], queue: EmbeddedTransport, headers: dict[str, str], reason: str
) -> None:
    status, body, response_headers = await post(client, BODY, headers)
    assert status == 401
    assert reason in body["error"]
    assert response_headers["WWW-Authenticate"].startswith('Bearer realm="router"')
    assert TOKEN not in json.dumps(body) and OTHER_TOKEN not in json.dumps(body)
    assert await queue.queue_depth() == 0


async def test_the_right_bearer_token_is_accepted(client: TestClient[Any, Any], queue: EmbeddedTransport) -> None:
    status, body, _ = await post(client, BODY, {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body) == (202, {"ids": ["evt-1"]})
    status, _, _ = await post(client, BODY, {"Authorization": f"bearer  {TOKEN}"})
    assert status == 202, "the scheme is case-insensitive (RFC 7235)"
    assert await queue.queue_depth() == 2


async def test_a_bad_token_is_refused_before_the_body_is_read(client: TestClient[Any, Any]) -> None:
    huge = b"x" * (10 * 1024 * 1024)
    status, body, _ = await post(client, huge, {"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert (status, body) == (401, {"error": "invalid bearer token"}), "401, not 413: nothing was read"
    # With "Expect: 100-continue" the refusal comes before the client sends the body.
    headers = {"Authorization": f"Bearer {OTHER_TOKEN}", "Content-Type": "application/json"}
    async with client.post("/events", data=BODY, headers=headers, expect100=True) as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    headers["Authorization"] = f"Bearer {TOKEN}"
    async with client.post("/events", data=BODY, headers=headers, expect100=True) as response:
        assert response.status == 202


async def test_health_readiness_and_metrics_need_no_token(client: TestClient[Any, Any]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        async with client.get(path) as response:
            assert response.status == 200, path
            assert TOKEN not in await response.text()


async def test_a_new_token_applies_to_the_next_request_after_a_reload(
    client: TestClient[Any, Any], holder: Holder
) -> None:
    holder.set({"auth": {"bearer": OTHER_TOKEN}})
    assert (await post(client, BODY, {"Authorization": f"Bearer {TOKEN}"}))[0] == 401
    assert (await post(client, BODY, {"Authorization": f"Bearer {OTHER_TOKEN}"}))[0] == 202
    holder.set({})
    assert (await post(client, BODY))[0] == 202, "auth removed: open again"


async def test_hmac_signatures(client: TestClient[Any, Any], holder: Holder, queue: EmbeddedTransport) -> None:
    holder.set({"auth": {"hmac": {"secret": SECRET, "header": "X-Hub-Signature-256"}}})
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY) == f"sha256={digest}"
    refused = [
        ({}, "signature required: send the sha256 HMAC of the body in X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "invalid signature in X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=" + hmac.new(b"other", BODY, "sha256").hexdigest()}, "invalid signature"),
        ({"X-Hub-Signature-256": "sha256=é" + digest[1:]}, "invalid signature"),
        ({"X-Signature": f"sha256={digest}"}, "signature required"),  # the configured header only
    ]
    for headers, reason in refused:
        status, body, response_headers = await post(client, BODY, headers)
        assert status == 401 and reason in body["error"], (headers, body)
        assert "WWW-Authenticate" not in response_headers
    # The signature covers the exact bytes: the same event re-serialised is refused.
    tampered = json.dumps(EVENT, indent=1).encode()
    assert (await post(client, tampered, {"X-Hub-Signature-256": f"sha256={digest}"}))[0] == 401
    assert await queue.queue_depth() == 0
    for value in (f"sha256={digest}", digest, digest.upper()):
        status, body, _ = await post(client, BODY, {"X-Hub-Signature-256": value})
        assert (status, body) == (202, {"ids": ["evt-1"]}), value
    assert await queue.queue_depth() == 3


async def test_hmac_sha512(client: TestClient[Any, Any], holder: Holder) -> None:
    holder.set({"auth": {"hmac": {"secret": SECRET, "algorithm": "sha512"}}})
    assert (await post(client, BODY, {"X-Signature": sign(SECRET, BODY, "sha256")}))[0] == 401
    assert (await post(client, BODY, {"X-Signature": sign(SECRET, BODY, "sha512")}))[0] == 202


async def test_secrets_are_registered_and_never_logged(
    client: TestClient[Any, Any], holder: Holder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await post(client, BODY, {"Authorization": f"Bearer {OTHER_TOKEN}"})
    await post(client, BODY, {"Authorization": f"Bearer {TOKEN}"})
    holder.set({"auth": {"hmac": {"secret": SECRET}}})
    await post(client, BODY, {"X-Signature": sign(SECRET, BODY)})
    assert {TOKEN, SECRET} <= registered_secrets(), "the log filter scrubs them wherever they appear"
    assert not [r for r in caplog.records if TOKEN in r.getMessage() or SECRET in r.getMessage()]
    assert TOKEN not in repr(holder.config) and SECRET not in repr(holder.config)


def load(tmp_path: Path, ingest: str, env: dict[str, str]) -> RouterConfig:
    from router.config.loader import load_config

    (tmp_path / "rules.yaml").write_text(f"version: 1\ningest:\n{ingest}\n")
    return load_config(tmp_path / "rules.yaml", build_registry(get_plugin_manager()), env=env).config


@pytest.mark.parametrize(
    ("ingest", "env", "problem"),
    [
        pytest.param("  auth: {}", {}, "set exactly one of 'bearer' or 'hmac'", id="neither"),
        pytest.param(
            "  auth: {bearer: '${T}', hmac: {secret: '${T}'}}",
            {"T": TOKEN},
            "set exactly one of 'bearer' or 'hmac'",
            id="both",
        ),
        pytest.param("  auth: {bearer: '${T}'}", {}, "environment variable T is not set", id="unset-variable"),
        pytest.param("  auth: {bearer: '${T}'}", {"T": "short-tok"}, "at least 16 characters", id="short-token"),
        pytest.param(
            "  auth: {hmac: {secret: '${T}', algorithm: md5}}", {"T": SECRET}, "'sha256' or 'sha512'", id="algorithm"
        ),
        pytest.param("  max_body_bytes: 0", {}, "must be at least 1", id="limit"),
    ],
)
def test_invalid_ingest_settings_are_config_errors_without_the_secret(
    tmp_path: Path, ingest: str, env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, ingest, env)
    text = str(caught.value)
    assert problem in text and "ingest" in text
    for value in env.values():
        assert value not in text


def test_the_token_comes_from_the_environment(tmp_path: Path) -> None:
    config = load(tmp_path, "  auth: {bearer: '${ROUTER_INGEST_TOKEN}'}", {"ROUTER_INGEST_TOKEN": TOKEN})
    assert config.ingest.auth is not None and config.ingest.auth.bearer is not None
    assert config.ingest.auth.bearer.get_secret_value() == TOKEN
    assert TOKEN not in config.model_dump_json()


# ------------------------------------------------------------------ a whole router


def project(root: Path, sink_url: str, token_variable: str) -> None:
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "note.j2").write_text("{{ event.type }}")
    (root / "rules.yaml").write_text(
        f"""
version: 1
state: {{url: "sqlite:///state.db"}}
ingest:
  auth: {{bearer: "${{{token_variable}}}"}}
channels:
  hook: {{type: webhook, url: "{sink_url}"}}
rules:
  - {{name: note, on: "**", template: note, channels: [hook]}}
"""
    )


async def router_post(router: RouterProcess, event: dict[str, Any], token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{router.url}/events", json=event, headers=headers) as r,
    ):
        return r.status


async def test_router_serve_requires_the_token_and_router_publish_sends_it(tmp_path: Path) -> None:
    env = {**os.environ, "ROUTER_INGEST_TOKEN": TOKEN, "ROUTER_INGEST_TOKEN_NEXT": OTHER_TOKEN}
    async with HttpSink() as sink:
        project(tmp_path, sink.url, "ROUTER_INGEST_TOKEN")
        router = await RouterProcess(tmp_path, env=env, args=("--no-watch",)).start()
        try:
            assert await router_post(router, {**EVENT, "id": "no-token"}, None) == 401
            assert await router_post(router, {**EVENT, "id": "wrong-token"}, OTHER_TOKEN) == 401
            assert await router_post(router, {**EVENT, "id": "good"}, TOKEN) == 202
            # `router publish` reads the token from the same rules.yaml and environment.
            process = await asyncio.create_subprocess_exec(
                ROUTER,
                "publish",
                "user.signed_up",
                "--data",
                "{}",
                "--http",
                f"127.0.0.1:{router.port}",
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
            published = out.decode().strip()
            await sink.wait_for(2)

            # A reload that switches to another variable: the old token stops working at once.
            text = (tmp_path / "rules.yaml").read_text().replace("ROUTER_INGEST_TOKEN}", "ROUTER_INGEST_TOKEN_NEXT}")
            (tmp_path / "rules.yaml").write_text(text)
            router.signal(signal.SIGHUP)
            await router.wait_for_log(
                lambda r: r.get("msg") == "configuration reloaded" and r.get("trigger") == "SIGHUP"
            )
            assert await router_post(router, {**EVENT, "id": "old-token"}, TOKEN) == 401
            assert await router_post(router, {**EVENT, "id": "new-token"}, OTHER_TOKEN) == 202
            await sink.wait_for(3)
            async with aiohttp.ClientSession() as session, session.get(f"{router.url}/metrics") as response:
                metrics = await response.text()
        finally:
            await router.stop()
        delivered = sorted(r.json()["meta"]["event_id"] for r in sink.requests)
    assert delivered == sorted(["good", published, "new-token"]), "refused requests enqueued nothing"
    output = router.logs() + router.out_path.read_text() + metrics
    assert TOKEN not in output and OTHER_TOKEN not in output
