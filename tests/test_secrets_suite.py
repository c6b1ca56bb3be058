"""Known secrets never leave the router: not in logs, metrics, CLI output, dead letters or errors.

`router serve` runs as users run it (on RabbitMQ with JSON logs, and on the embedded queue with
text logs) with a Discord webhook token, a Slack token, an SMTP password in a mailtos:// URL, a
webhook ``Authorization: Bearer`` header, a token in a webhook URL's query and an ingest bearer
token. It is driven through successful deliveries, permanent (401) and retryable (429, 500,
connection refused) failures, dead letters, a render error, a reload with an invalid config, a
broken ``router check`` and the inspection commands; every byte it prints is captured and
searched for each secret, its URL-encoded forms and any 10-character piece of it.

Providers that echo our request in their error bodies are played by the fakes on purpose.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from router.core.redact import SecretFilter, register_secrets
from router.support.logs import JsonFormatter
from tests.builders import event_object
from tests.engine_support import until
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply, free_port
from tests.fakes.smtp_sink import SmtpSink
from tests.serve_support import ROUTER, RouterProcess, delete_topology, publish_amqp, unique_names

# Random-looking, so that any 10-character piece of one is found nowhere by chance.
DISCORD_TOKEN = "dQ4wR9xZ_k2Lm7Vp-Ts8Yb3Nc6Hj1Fg5"
SLACK_TOKEN = "Sk7Jq2Wx9Pz4Lc8Vb3Nm6Rt1Yh5Gd0Fa"
SMTP_PASSWORD = "Pw9/Kx+3mZ!q7Lt~Vr2"  # '/', '+' and '!' take other forms once URL-encoded
HEADER_TOKEN = "Hb3Zr8Qm1Xk6Wv4Tn9Jp2Ls7Dc5Fy0"
QUERY_TOKEN = "Qt5Mx2Zk8Rv1Wb7Np4Jc9Hs3Ld6Fg0"
INGEST_TOKEN = "In6Vz1Qk7Xr3Mb9Wt2Pj8Lc4Hs5Dg0"
SECRETS = (DISCORD_TOKEN, SLACK_TOKEN, SMTP_PASSWORD, HEADER_TOKEN, QUERY_TOKEN, INGEST_TOKEN)
PIECE = 10

SMTP_USER = "router"
TEMPLATES = {
    "note.j2": "{% block title %}{{ data.user }} did {{ event.type }}{% endblock %}{% block body %}n={{ data.n }}{% endblock %}",
    "broken.j2": "{% block title %}{{ data.missing.deeper }}{% endblock %}",
}


def forms(secret: str) -> set[str]:
    """The secret, its encoded forms and every piece of it long enough to identify it."""
    found = {secret, quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)}
    found |= {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}
    return found


FORMS = {form: secret for secret in SECRETS for form in forms(secret)}


@dataclass
class Captured:
    """Everything the router showed anyone, by where it was seen."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str | bytes) -> str:
        shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        self.texts.append((where, shown))
        return shown

    def assert_clean(self) -> None:
        leaks = []
        for where, text in self.texts:
            for form, secret in FORMS.items():
                at = text.find(form)
                if at >= 0:
                    leaks.append(f"{where}: {secret[:4]}... as {form!r}: ...{text[max(0, at - 80) : at + 40]!r}...")
        assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:20])


@dataclass
class Fakes:
    discord: HttpSink
    slack: HttpSink
    hook_ok: HttpSink
    hook_429: HttpSink
    hook_500: HttpSink
    smtp: SmtpSink
    dead_port: int


@asynccontextmanager
async def fakes() -> AsyncIterator[Fakes]:
    # A provider that quotes our request back in its error: the reason must still be clean.
    echo = f"denied: Authorization=Bearer {HEADER_TOKEN} url=/in?token={QUERY_TOKEN}"
    async with (
        HttpSink() as discord,
        HttpSink(Reply(200, "ok")) as slack,
        HttpSink() as hook_ok,
        HttpSink(Reply(429, f"slow down {QUERY_TOKEN}", headers={"Retry-After": "1"})) as hook_429,
        HttpSink(Reply(500, echo)) as hook_500,
    ):
        with smtp_sink() as smtp:
            yield Fakes(discord, slack, hook_ok, hook_429, hook_500, smtp, free_port())


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink(credentials=(SMTP_USER, SMTP_PASSWORD)).running() as server:
        yield server


def rules_yaml(f: Fakes, broker: str) -> str:
    password = quote(SMTP_PASSWORD, safe="")
    auth = {"Authorization": "Bearer ${HOOK_TOKEN}"}
    query = f"/in?token={QUERY_TOKEN}"
    return f"""
version: 1
{broker}
state: {{url: "sqlite:///state.db"}}
ingest: {{auth: {{bearer: "${{ROUTER_INGEST_TOKEN}}"}}}}
defaults:
  retry: {{attempts: 2, backoff: 100ms, max_backoff: 200ms, jitter: 0}}
channels:
  discord: {{type: discord, url: "${{DISCORD_URL}}"}}
  slack: {{type: slack, url: "https://hooks.slack.com/services/T0SUITE1/B0SUITE1/{SLACK_TOKEN}"}}
  mail_ok: {{type: email, url: "mailto://{SMTP_USER}:{password}@127.0.0.1:{f.smtp.port}", to: [ops@example.com], from: router@example.com}}
  mail_down: {{type: email, url: "mailtos://{SMTP_USER}:{password}@127.0.0.1:{f.dead_port}", to: [ops@example.com], from: router@example.com}}
  hook_ok: {{type: webhook, url: "{f.hook_ok.url}{query}", headers: {json.dumps(auth)}}}
  hook_429: {{type: webhook, url: "{f.hook_429.url}{query}", headers: {json.dumps(auth)}}}
  hook_500: {{type: webhook, url: "{f.hook_500.url}{query}", headers: {json.dumps(auth)}}}
  hook_refused: {{type: webhook, url: "http://127.0.0.1:{f.dead_port}{query}", headers: {json.dumps(auth)}}}
rules:
  - {{name: ok, on: suite.ok, template: note, channels: [discord, slack, mail_ok, hook_ok]}}
  - {{name: fail, on: suite.fail, template: note, channels: [discord, slack, mail_down, hook_429, hook_500, hook_refused]}}
  - {{name: broken, on: suite.render, template: broken, channels: [hook_ok]}}
"""


# The reload puts secrets from the environment where validation fails on them: the problems
# may name the variables, never their values.
INVALID_RELOAD = {
    "  hook_ok: {type: webhook,": "  hook_ok: {type: webhook, timeout: '${HOOK_TOKEN}',",
    '  discord: {type: discord, url: "${DISCORD_URL}"}': '  discord: {type: discord, url: "${DISCORD_URL}/x y"}',
    "state: {url:": 'templates: "${ROUTER_INGEST_TOKEN}"\nstate: {url:',
}

# A literal secret next to a broken option: `router check` must report the problem without it.
BROKEN_CHECK = f"""
version: 1
channels:
  discord: {{type: discord, url: "https://discord.com/api/webhooks/not-a-number/{DISCORD_TOKEN}"}}
  slack: {{type: slack, url: "https://hooks.slack.com/services/T0SUITE1/{SLACK_TOKEN}", icon: 5}}
  mail: {{type: email, url: "mailtos://{SMTP_USER}:{quote(SMTP_PASSWORD, safe="")}@", to: [not-an-address]}}
  hook: {{type: webhook, url: "ftp://example.com/in?token={QUERY_TOKEN}", headers: {{Authorization: [Bearer, {HEADER_TOKEN}]}}, timeout: -1s}}
  hook2: {{type: webhook, url: "https://example.com/in?token={QUERY_TOKEN}", headers: {{Authorization: "Bearer {HEADER_TOKEN}"}}, method: GETT}}
ingest: {{auth: {{bearer: "{INGEST_TOKEN}", hmac: {{secret: "{INGEST_TOKEN}"}}}}}}
rules:
  - {{name: r, on: a.b, template: nope, channels: [discord, slack, mail, hook, hook2, missing]}}
"""


def event(kind: str, n: int) -> dict[str, object]:
    return event_object(f"suite.{kind}", f"{kind}-{n}", {"user": "ada", "n": n})


def environment(f: Fakes) -> dict[str, str]:
    env = intercept.subprocess_env({"discord.com": f.discord.url, "hooks.slack.com": f.slack.url})
    env["DISCORD_URL"] = f"https://discord.com/api/webhooks/123456789/{DISCORD_TOKEN}"
    env["HOOK_TOKEN"] = HEADER_TOKEN
    env["ROUTER_INGEST_TOKEN"] = INGEST_TOKEN
    return env


async def cli(
    captured: Captured, root: Path, env: dict[str, str], *args: str, expect: int | None = 0
) -> tuple[str, str]:
    """Run a router command; returns its stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        ROUTER, *args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    out = captured.add(f"router {' '.join(args)} (stdout)", stdout)
    err = captured.add(f"router {' '.join(args)} (stderr)", stderr)
    if expect is not None:
        assert process.returncode == expect, f"router {' '.join(args)} exited {process.returncode}:\n{out}\n{err}"
    return out, err


# Commands that only read the config; each run takes seconds here, so the two runs share them.
AUTHORING_AMQP = [("check",), ("plugins",), ("broken", "check")]
AUTHORING_EMBEDDED = [("test", "ok.json", "--explain"), ("render", "--rule", "ok", "--event", "ok.json", "--json")]


async def post(captured: Captured, router: RouterProcess, body: object, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{router.url}/events", json=body, headers=headers) as response,
    ):
        captured.add(f"POST /events ({response.status})", await response.read())
        captured.add("POST /events headers", json.dumps(dict(response.headers)))
        return response.status


async def metrics_text(captured: Captured, router: RouterProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}/metrics") as response:
        return captured.add("/metrics", await response.read())


async def api_answers(captured: Captured, router: RouterProcess) -> None:
    """Every /api answer (docs/activity.md), each event's story included, once the history has them."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 30
        while True:
            async with session.get(f"{router.url}/api/activity?since=1h&limit=500") as response:
                listed = await response.json()
                captured.add("/api/activity", json.dumps(listed))
            if len(listed["events"]) >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(listed["events"]) >= 3, listed
        paths = ["/api/rules", "/api/channels", "/api/overview?window=1h&step=60", "/api/dead-letters", "/api/csrf"]
        paths += [f"/api/events/{e['event_id']}" for e in listed["events"]]
        for path in paths:
            async with session.get(f"{router.url}{path}") as response:
                assert response.status == 200, path
                captured.add(path, await response.read())


async def ui_pages(captured: Captured, router: RouterProcess) -> None:
    """The console's page and every file it loads (/ui/; docs/activity.md)."""
    from router.console.routes import load_static

    async with aiohttp.ClientSession() as session:
        for path in ["/ui/", *(f"/ui/static/{name}" for name in load_static() if name != "index.html")]:
            async with session.get(f"{router.url}{path}") as response:
                assert response.status == 200, path
                captured.add(path, await response.read())


def dead_letters(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("router_dead_letters_total{")
    )


async def drive(
    root: Path, f: Fakes, broker: str, log_format: str, publish: object, authoring: list[tuple[str, ...]]
) -> Captured:
    """One router through every path a secret could leak from; returns what it showed."""
    captured = Captured()
    (root / "templates").mkdir()
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    (root / "rules.yaml").write_text(rules_yaml(f, broker))
    env = environment(f)
    (root / "ok.json").write_text(json.dumps(event("ok", 0)))

    broken_root = root / "broken"
    broken_root.mkdir()
    (broken_root / "rules.yaml").write_text(BROKEN_CHECK)

    router = RouterProcess(root, env=env, args=("--log-format", log_format, "--log-level", "DEBUG"))
    await router.start()
    # The commands that only read the config run beside the router (each takes seconds to start),
    # two at a time on this small machine.
    slots = asyncio.Semaphore(2)

    async def offline(where: Path, args: tuple[str, ...], expect: int) -> tuple[str, str]:
        async with slots:
            return await cli(captured, where, env, *args, expect=expect)

    commands = [
        offline(broken_root, args[1:], 1) if args[0] == "broken" else offline(root, args, 0) for args in authoring
    ]
    authored = asyncio.ensure_future(asyncio.gather(*commands))
    try:
        # Ingest: refused without the token and with a wrong one; accepted with it.
        assert await post(captured, router, event("ok", 99), None) == 401
        assert await post(captured, router, event("ok", 99), INGEST_TOKEN[:-1] + "x") == 401
        assert await post(captured, router, event("ok", 99), f"{INGEST_TOKEN} {INGEST_TOKEN}") == 401

        await publish(router, [event("ok", 1)])  # type: ignore[operator]
        await f.hook_ok.wait_for(1, timeout=30)
        await f.discord.wait_for(1, timeout=30)
        await f.slack.wait_for(1, timeout=30)
        await asyncio.to_thread(f.smtp.wait_for, 1, 30)
        assert f.hook_ok.requests[0].headers["authorization"] == f"Bearer {HEADER_TOKEN}"  # the secrets are used
        assert f.hook_ok.requests[0].query["token"] == QUERY_TOKEN

        # Failures: Discord refuses the token (permanent), Slack errs (retryable), the others
        # answer 429 and 500 or refuse connections, until every delivery is dead-lettered.
        f.discord.default = Reply(401, {"message": f"Invalid Webhook Token {DISCORD_TOKEN}", "code": 50027})
        f.slack.default = Reply(500, f"invalid_token {SLACK_TOKEN}")
        await publish(router, [event("fail", 2), event("render", 3)])  # type: ignore[operator]
        deadline = time.monotonic() + 45
        while dead_letters(await metrics_text(captured, router)) < 7:
            assert time.monotonic() < deadline, f"dead letters missing:\n{router.logs()[-3000:]}"
            await asyncio.sleep(0.2)

        # The authoring commands read rules.yaml: let them finish before it is broken below (on a
        # loaded machine one could otherwise start late and read the broken file).
        await asyncio.wait([authored], timeout=180)
        # A reload with an invalid config: the problems may name the variables, not their values.
        rules = (root / "rules.yaml").read_text()
        broken = rules
        for old, new in INVALID_RELOAD.items():
            assert old in broken
            broken = broken.replace(old, new)
        (root / "rules.yaml").write_text(broken)
        router.signal(signal.SIGHUP)
        await until(lambda: "reload failed" in router.logs(), timeout=30, interval=0.1)
        reload_log = router.logs()
        assert "HOOK_TOKEN" in reload_log or "timeout" in reload_log
        (root / "rules.yaml").write_text(rules)

        listed, _ = await asyncio.gather(
            cli(captured, root, env, "dlq", "list", "--json"), cli(captured, root, env, "dlq", "list")
        )
        letters = json.loads(listed[0])
        assert {(x["reason"], x["channel"]) for x in letters if x["channel"]} == {
            ("permanent", "discord"),  # 401: the token is refused, retrying cannot help
            ("exhausted", "slack"),
            ("exhausted", "hook_429"),
            ("exhausted", "hook_500"),
            ("exhausted", "hook_refused"),
            ("exhausted", "mail_down"),
        }
        assert any(x["reason"] == "render" for x in letters)
        await api_answers(captured, router)
        await ui_pages(captured, router)
        await metrics_text(captured, router)
    finally:
        if not authored.done():
            await asyncio.wait([authored], timeout=120)
        await router.stop()
        captured.add(f"router serve --log-format {log_format} (stderr)", router.logs())
        captured.add("router serve (stdout)", router.out_path.read_bytes() if router.out_path.exists() else b"")

    for args, (out, err) in zip(authoring, await authored, strict=True):
        if args[0] == "broken":  # the problems are reported, with the secrets left out
            assert "channels.discord.url" in out + err and "channels.hook.url" in out + err, out + err
    return captured


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


@pytest.mark.integration
async def test_no_secret_leaks_on_rabbitmq_with_json_logs(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str]
) -> None:
    broker = f'broker: {{url: "{rabbitmq_url}", exchange: {names["exchange"]}, queue: {names["queue"]}}}'

    async def publish(router: RouterProcess, events: list[dict[str, object]]) -> None:
        messages = [(str(e["type"]), json.dumps(e).encode()) for e in events]
        await publish_amqp(rabbitmq_url, names["exchange"], messages)

    async with fakes() as f:
        captured = await drive(tmp_path, f, broker, "json", publish, AUTHORING_AMQP)
    assert any(
        where.startswith("router serve --log-format json") and '"level"' in text for where, text in captured.texts
    )
    captured.assert_clean()
    userinfo = rabbitmq_url.split("://", 1)[1].rpartition("@")[0]  # the broker's password: guest:guest here
    assert not [where for where, text in captured.texts if userinfo and f"{userinfo}@" in text]


@pytest.mark.integration
async def test_no_secret_leaks_on_the_embedded_queue_with_text_logs(tmp_path: Path) -> None:
    async def publish(router: RouterProcess, events: list[dict[str, object]]) -> None:
        status = await post(captured_ingest, router, events, INGEST_TOKEN)
        assert status == 202

    captured_ingest = Captured()
    async with fakes() as f:
        captured = await drive(tmp_path, f, "", "text", publish, AUTHORING_EMBEDDED)
    captured.texts += captured_ingest.texts
    captured.assert_clean()


def test_structured_log_fields_are_scrubbed_like_the_message() -> None:
    # Formatters print ``extra={"fields": ...}`` as they are: reasons and errors there come from
    # exceptions and provider responses, so they are scrubbed too (a reload's problems, say).
    register_secrets(HEADER_TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("tests.secrets_suite")
    logger.addHandler(handler)
    try:
        logger.warning(
            "failed: %s",
            f"Bearer {HEADER_TOKEN}",
            extra={
                "fields": {
                    "error": f"401 from https://example.com/in?token={QUERY_TOKEN}",
                    "problems": [f"header 'Authorization: Bearer {HEADER_TOKEN}'"],
                    "attempt": 2,
                }
            },
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "failed: Bearer ***"
    assert line["error"] == "401 from https://example.com"
    assert line["problems"] == ["header 'Authorization: Bearer ***'"]
    assert line["attempt"] == 2
