"""The web console in a real browser (headless Chromium) against a real `router serve`.

One event is delivered (Discord, through the intercepted apprise request), one's webhook fails
twice then succeeds, one's Slack channel is dead-lettered. In the console: the live list shows
them, "failed" narrows it to the two that failed, the dead one's page shows the error and the
Slack message as rendered; once the sink recovers, replaying it from the page delivers it.
A schema failure and a poison message show under the "rejected" count with their reasons.
The escaping test puts script tags, an ``onerror`` image and ``javascript:`` links in event
data and templates, and checks that nothing runs and no such link is followable.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser_support import browser_errors, chromium, click, find_browser, screenshot, wait_until
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply
from tests.fakes.smtp_sink import SmtpSink
from tests.serve_support import RouterProcess

pytestmark = pytest.mark.integration

DISCORD_URL = "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET_discord"
SLACK_URL = "https://hooks.slack.com/services/T0001/B0002/SeCrEtslackXXXX"
FAST_RETRY = "{attempts: 3, backoff: 200ms, max_backoff: 400ms, jitter: 0}"

RULES = f"""
version: 1
broker: {{embedded_path: queue.db}}
state: {{url: "sqlite:///state.db"}}
defaults:
  retry: {FAST_RETRY}
channels:
  chat: {{type: discord, url: "{DISCORD_URL}", username: Shop bot}}
  flaky: {{type: webhook, url: "FLAKY_URL/hook"}}
  ops: {{type: slack, url: "{SLACK_URL}"}}
  mail: {{type: email, url: "mailto://127.0.0.1:SMTP_PORT", to: [ops@example.com], from: shop@example.com}}
rules:
  - {{name: paid, on: order.paid, template: order, channels: [chat]}}
  - {{name: shipped, on: order.shipped, template: order, channels: [flaky]}}
  - {{name: refunded, on: order.refunded, template: order, channels: [ops]}}
  - {{name: mailed, on: order.mailed, template: order, channels: [mail, flaky]}}
"""

ORDER = """\
{% block title %}Order {{ data.order }}: {{ event.type }}{% endblock %}
{% block body %}{{ data.note }} (total {{ data.total }}){% endblock %}
"""

DISCORD = """\
{% extends "order.j2" %}
{% block discord %}
embeds:
  - title: {{ self.title() | yaml }}
    description: {{ data.note | yaml }}
    url: {{ data.link | yaml }}
    color: "#57F287"
    fields: [{name: Total, value: {{ data.total | yaml }}, inline: true}]
{% endblock %}
"""

SLACK = """\
{% extends "order.j2" %}
{% block slack %}
text: {{ self.title() | yaml }}
blocks:
  - {type: header, text: {type: plain_text, text: {{ self.title() | yaml }}}}
  - {type: section, text: {type: mrkdwn, text: {{ ("*Refund* of " ~ data.total ~ " <" ~ data.link ~ "|details>") | yaml }}}}
{% endblock %}
"""


EMAIL = """\
{% extends "order.j2" %}
{% block email %}
to: {{ data.email | yaml }}
subject: {{ ("Your order " ~ data.order) | yaml }}
{% endblock %}
"""


def project(root: Path, flaky_url: str, smtp_port: int, extra: str = "") -> None:
    (root / "templates").mkdir()
    (root / "templates" / "order.j2").write_text(ORDER)
    (root / "templates" / "order.discord.j2").write_text(DISCORD)
    (root / "templates" / "order.slack.j2").write_text(SLACK)
    (root / "templates" / "order.email.j2").write_text(EMAIL)
    (root / "rules.yaml").write_text(RULES.replace("FLAKY_URL", flaky_url).replace("SMTP_PORT", str(smtp_port)) + extra)


async def publish(router: RouterProcess, event: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{router.url}/events", json=event) as response:
        assert response.status == 202, await response.text()


def post_sync(router: RouterProcess, event: dict[str, Any] | list[dict[str, Any]]) -> None:
    """POST an event (or a batch) from the browser's thread (the test's event loop serves the sinks)."""
    request = urllib.request.Request(
        f"{router.url}/events", data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


@pytest.fixture
async def sinks() -> AsyncIterator[dict[str, Any]]:
    """Stand-ins for Discord (accepts), Slack (down: 500 until a test says otherwise), a webhook, SMTP."""
    find_browser()  # skip (or fail in CI) before starting anything
    async with HttpSink() as discord, HttpSink(default=Reply(500, body="internal error")) as slack, HttpSink() as hook:
        with SmtpSink().running() as smtp:
            yield {"discord": discord, "slack": slack, "hook": hook, "smtp": smtp}


async def start_router(
    root: Path, sinks: dict[str, Any], *, extra: str = "", env: dict[str, str] | None = None
) -> RouterProcess:
    project(root, sinks["hook"].url, sinks["smtp"].port, extra)
    redirect = intercept.subprocess_env({"discord.com": sinks["discord"].url, "hooks.slack.com": sinks["slack"].url})
    return await RouterProcess(root, env={**os.environ, **redirect, **(env or {})}).start()


async def test_failures_are_found_inspected_and_replayed_in_the_browser(tmp_path: Path, sinks: dict[str, Any]) -> None:
    flaky, slack = sinks["hook"], sinks["slack"]
    flaky.reply(Reply(503), Reply(503))  # then the default: 204
    router = await start_router(tmp_path, sinks)
    try:
        base = {"source": "shop", "data": {"total": "42.00 EUR", "note": "thanks", "link": "https://shop.example/o/1"}}
        await publish(
            router, {**base, "id": "evt-paid", "type": "order.paid", "data": {**base["data"], "order": "A-1"}}
        )
        await sinks["discord"].wait_for(1)
        await publish(
            router, {**base, "id": "evt-shipped", "type": "order.shipped", "data": {**base["data"], "order": "A-2"}}
        )
        await publish(
            router, {**base, "id": "evt-refunded", "type": "order.refunded", "data": {**base["data"], "order": "A-3"}}
        )
        await flaky.wait_for(3, timeout=20)
        await router.wait_for_log(lambda r: r.get("outcome") == "failed" and r.get("channel") == "ops", timeout=20)

        def browse() -> None:
            with chromium(height=1100) as driver:
                driver.get(f"{router.url}/ui/")
                rows = lambda: driver.find_elements("css selector", "tr[data-event-id]")  # noqa: E731
                wait_until(lambda: len(rows()) >= 3, what="three events in the live list", driver=driver)
                screenshot(driver, "activity")
                counts = {
                    el.get_attribute("data-outcome"): el.find_element("css selector", ".n").text
                    for el in driver.find_elements("css selector", ".count")
                }
                assert counts["dead"] == "1" and counts["sent"] == "2", counts

                # Live: an event published now appears without reloading the page, marked as new.
                post_sync(
                    router, {**base, "id": "evt-live", "type": "order.paid", "data": {**base["data"], "order": "A-4"}}
                )
                fresh = wait_until(
                    lambda: driver.find_element("css selector", 'tr[data-event-id="evt-live"]'),
                    what="a new event in the live list",
                    driver=driver,
                )
                assert "fresh" in (fresh.get_attribute("class") or "")

                # Filter to failures: the retried one and the dead one.
                click(driver, '.count[data-outcome="failed"]')
                wait_until(
                    lambda: {r.get_attribute("data-event-id") for r in rows()} == {"evt-shipped", "evt-refunded"},
                    what="the failed filter",
                    driver=driver,
                )
                screenshot(driver, "activity-failed")

                # Another filter, typed in: the type.
                driver.get(f"{router.url}/ui/#/activity")

                def type_filter() -> bool:  # again if the view was replaced meanwhile
                    field = driver.find_element("css selector", "input[name=type]")
                    field.clear()
                    field.send_keys("order.paid")
                    field.submit()
                    return True

                wait_until(type_filter, what="typing a filter", driver=driver)
                wait_until(
                    lambda: {r.get_attribute("data-event-id") for r in rows()} == {"evt-paid", "evt-live"},
                    what="the type filter",
                    driver=driver,
                )
                assert "type=order.paid" in driver.current_url
                driver.get(f"{router.url}/ui/#/activity?outcome=failed")
                wait_until(lambda: len(rows()) == 2, what="the failed list again", driver=driver)

                # The dead one: its error, and the Slack message as it was rendered.
                click(driver, 'tr[data-event-id="evt-refunded"] a.event-link')
                failure = wait_until(
                    lambda: driver.find_element("css selector", '.delivery[data-channel="ops"] .failure'),
                    what="the dead delivery's error",
                    driver=driver,
                )
                assert "500" in failure.text
                preview = driver.find_element("css selector", '.delivery[data-channel="ops"] .preview-slack')
                assert driver.find_element("css selector", ".sl-header").text == "Order A-3: order.refunded"
                link = preview.find_element("css selector", "a")
                assert (link.text, link.get_attribute("href")) == ("details", "https://shop.example/o/1")
                attempts = driver.find_elements("css selector", '.delivery[data-channel="ops"] .attempt')
                assert len(attempts) >= 1
                screenshot(driver, "event-dead")

                # The sink recovers; replay after confirming; the page shows it delivered.
                slack.default = Reply(200, body="ok")
                click(driver, ".actions button.danger")
                click(driver, ".actions .confirm-yes")
                wait_until(
                    lambda: driver.find_element("css selector", "#event-outcome .badge").text == "sent",
                    timeout=30,
                    what="the replayed event delivered",
                    driver=driver,
                )
                screenshot(driver, "event-replayed")
                assert browser_errors(driver) == []
                page = driver.page_source
                assert "Tok3n_SECRET" not in page and "SeCrEtslack" not in page

        await asyncio.to_thread(browse)
        assert slack.requests[-1].json()["blocks"][0]["text"]["text"] == "Order A-3: order.refunded"
    finally:
        await router.stop()


HOSTILE = '<script>window.__pwned="script"</script>"><img src=x onerror="window.__pwned=\'img\'">'


async def test_event_data_is_shown_as_text_and_nothing_in_it_runs(tmp_path: Path, sinks: dict[str, Any]) -> None:
    router = await start_router(tmp_path, sinks)
    try:
        await publish(
            router,
            {
                "id": "evt-hostile",
                "type": "order.paid",
                "source": "shop",
                "subject": HOSTILE,
                "data": {
                    "order": HOSTILE,
                    "note": f"[click me](javascript:window.__pwned='md') {HOSTILE}",
                    "total": HOSTILE,
                    # An embed's url must be http(s) (the router refuses the render otherwise); the
                    # markdown link in the description and this field carry javascript: instead.
                    "link": "https://shop.example/o/1",
                    "homepage": "javascript:window.__pwned='link'",
                },
            },
        )
        await sinks["discord"].wait_for(1)

        def browse() -> None:
            with chromium() as driver:
                for view, ready in (
                    ("#/activity", 'tr[data-event-id="evt-hostile"]'),
                    ("#/event/evt-hostile", '.delivery[data-channel="chat"] .preview-discord'),
                ):
                    driver.get(f"{router.url}/ui/{view}")
                    wait_until(
                        lambda ready=ready: driver.find_elements("css selector", ready), what=view, driver=driver
                    )
                    # The hostile text is on the page, as text.
                    wait_until(lambda: HOSTILE in driver.find_element("tag name", "main").text, what="hostile text")
                    screenshot(driver, "hostile-" + view.strip("#/").replace("/", "-"))
                    for link in driver.find_elements("css selector", "a[href]"):
                        href = link.get_attribute("href") or ""
                        assert href.startswith((router.url, "https://", "http://", "mailto:")), href
                    # Clicking the would-be links runs nothing either.
                    for fake in driver.find_elements("css selector", ".unsafe-link"):
                        fake.click()
                    state = driver.execute_script(
                        "return {pwned: window.__pwned || null, images: document.images.length,"
                        " scripts: document.scripts.length}"
                    )
                    assert state == {"pwned": None, "images": 0, "scripts": 1}, state
                    errors = browser_errors(driver)
                    assert not [e for e in errors if "Content Security Policy" in e or "pwned" in e], errors

        await asyncio.to_thread(browse)
    finally:
        await router.stop()


async def test_rejected_messages_are_listed_and_explained(tmp_path: Path, sinks: dict[str, Any]) -> None:
    from router.transports.embedded import EmbeddedTransport
    from tests.test_activity_rejected import POISON, poison_id

    router = await start_router(tmp_path, sinks, extra="events:\n  order.checked:\n    order: string\n")
    try:
        await publish(router, {"id": "evt-no-order", "type": "order.checked", "source": "shop", "data": {"total": 1}})
        queue = EmbeddedTransport(tmp_path / "queue.db")  # a poison message, as a broken writer leaves one
        await queue.connect()
        try:
            await queue.publish_event(POISON, routing_key="order.paid")
        finally:
            await queue.close()
        poison = poison_id(POISON)

        def browse() -> None:
            with chromium() as driver:
                driver.get(f"{router.url}/ui/#/activity")
                click(driver, '.count[data-outcome="rejected"]')
                for event_id in ("evt-no-order", poison):
                    row = f'tr[data-event-id="{event_id}"] .rejection'
                    wait_until(lambda row=row: driver.find_elements("css selector", row), what=event_id, driver=driver)
                reasons = {
                    r.get_attribute("data-event-id"): r.find_element("css selector", ".rejection").text
                    for r in driver.find_elements("css selector", "tr[data-event-id]")
                }
                assert set(reasons) == {"evt-no-order", poison}, reasons
                assert reasons["evt-no-order"].startswith("schema: ") and "order" in reasons["evt-no-order"]
                assert reasons[poison].startswith("poison: body is not UTF-8"), reasons
                screenshot(driver, "rejected-list")
                click(driver, f'tr[data-event-id="{poison}"] .event-link')
                section = wait_until(
                    lambda: driver.find_element("css selector", "#rejection"), what="rejection", driver=driver
                )
                assert "Rejected: poison" in section.text and "dead-letter queue" in section.text
                assert driver.find_element("id", "event-outcome").text == "rejected"
                assert "hunter2" not in driver.find_element("tag name", "main").text
                screenshot(driver, "rejected-event")
                assert not browser_errors(driver)

        await asyncio.to_thread(browse)
    finally:
        await router.stop()


async def test_email_and_webhook_previews_in_a_narrow_window(tmp_path: Path, sinks: dict[str, Any]) -> None:
    router = await start_router(tmp_path, sinks)
    try:
        data = {"order": "N-1", "note": "Thanks for your order", "total": "1", "email": "ada@example.com"}
        await publish(router, {"id": "evt-narrow", "type": "order.mailed", "source": "shop", "data": data})
        await asyncio.to_thread(sinks["smtp"].wait_for, 1)
        await sinks["hook"].wait_for(1)

        def browse() -> None:
            with chromium(width=390, height=844) as driver:
                driver.get(f"{router.url}/ui/#/event/evt-narrow")
                email = wait_until(
                    lambda: driver.find_element("css selector", '.delivery[data-channel="mail"] .preview-email'),
                    what="the email preview",
                    driver=driver,
                )
                assert email.find_element("css selector", ".em-to").text == "ada@example.com"
                assert email.find_element("css selector", ".em-subject").text == "Your order N-1"
                assert "Thanks for your order (total 1)" in email.find_element("css selector", ".em-body").text
                hook = driver.find_element("css selector", '.delivery[data-channel="flaky"] .preview-webhook pre')
                posted = json.loads(hook.text)
                assert posted["title"] == "Order N-1: order.mailed", posted
                # Nothing wider than the window: no sideways scrolling of the page itself.
                widths = driver.execute_script(
                    "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
                )
                screenshot(driver, "narrow-event")
                assert widths[0] <= widths[1], widths
                assert all(link.is_displayed() for link in driver.find_elements("css selector", "nav a"))
                driver.get(f"{router.url}/ui/#/activity")
                wait_until(lambda: driver.find_elements("css selector", 'tr[data-event-id="evt-narrow"]'), what="list")
                widths = driver.execute_script(
                    "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
                )
                screenshot(driver, "narrow-activity")
                assert widths[0] <= widths[1], widths
                # Rows are stacked cards there: the list itself needs no sideways scrolling either.
                box = driver.execute_script(
                    "const s = document.querySelector('.list .scroll'); return [s.scrollWidth, s.clientWidth]"
                )
                assert box[0] <= box[1], box

                # A page and more of events no rule matches (nothing to deliver): the list pages by 50.
                batch = [
                    {"id": f"evt-quiet-{n}", "type": "order.viewed", "source": "shop", "data": {}} for n in range(60)
                ]
                post_sync(router, batch)
                driver.get(f"{router.url}/ui/#/activity?type=order.viewed")
                rows = lambda: driver.find_elements("css selector", "tr[data-event-id]")  # noqa: E731
                wait_until(lambda: len(rows()) == 50, what="the first page of 50", driver=driver)
                click(driver, "button.more")
                wait_until(lambda: len(rows()) == 60, what="the next page after 'Load more'", driver=driver)
                assert not driver.find_element("css selector", "button.more").is_displayed()

        await asyncio.to_thread(browse)
    finally:
        await router.stop()


async def test_dead_letters_page_replays_all_matching_and_the_stats_pages_show_them(
    tmp_path: Path, sinks: dict[str, Any]
) -> None:
    slack: HttpSink = sinks["slack"]
    router = await start_router(tmp_path, sinks)
    try:
        data = {"total": "9.00 EUR", "note": "n", "link": "https://shop.example/o/9"}
        for n in (1, 2):
            await publish(
                router,
                {
                    "id": f"evt-dead-{n}",
                    "type": "order.refunded",
                    "source": "shop",
                    "data": {**data, "order": f"R-{n}"},
                },
            )
        deaths = lambda r: r.get("outcome") == "failed" and r.get("event_id") == "evt-dead-2"  # noqa: E731
        await router.wait_for_log(deaths, timeout=30)
        await router.wait_for_log(lambda r: r.get("outcome") == "failed" and r.get("event_id") == "evt-dead-1")

        def browse() -> None:
            with chromium() as driver:
                driver.get(f"{router.url}/ui/#/dead")
                rows = lambda: driver.find_elements("css selector", "tr[data-event-id]")  # noqa: E731
                wait_until(lambda: len(rows()) == 2, what="two dead letters", driver=driver)
                cells = wait_until(
                    lambda: [c.text for c in rows()[0].find_elements("css selector", "td")],
                    what="a dead letter's cells",
                )
                assert cells[3:6] == ["refunded", "ops", cells[5]] and cells[5], cells  # rule, channel, reason
                assert "500" in cells[6] and cells[7] == "3", cells  # the error, the attempts
                screenshot(driver, "dead-letters")
                slack.default = Reply(200, body="ok")  # Slack is back
                click(driver, ".actions button.danger")
                question = driver.find_element("css selector", ".actions .question").text
                assert "Replay every dead letter matching" in question
                click(driver, ".actions .confirm-yes")
                done = wait_until(lambda: driver.find_element("css selector", ".actions .done").text, what="summary")
                assert "replayed 2" in done, done
                wait_until(lambda: not rows(), timeout=30, what="the dead letters gone", driver=driver)

                driver.get(f"{router.url}/ui/#/rules")
                rule = wait_until(
                    lambda: [
                        r for r in driver.find_elements("css selector", "tbody tr") if r.text.startswith("refunded")
                    ],
                    what="the rules page",
                    driver=driver,
                )[0]
                assert [c.text for c in rule.find_elements("css selector", "td")][2] == "2"  # fired
                driver.get(f"{router.url}/ui/#/channels")
                ops = wait_until(
                    lambda: [r for r in driver.find_elements("css selector", "tbody tr") if r.text.startswith("ops")],
                    what="the channels page",
                    driver=driver,
                )[0]
                assert "slack" in ops.text and "500" in ops.text, ops.text  # type, last error
                screenshot(driver, "channels")
                driver.get(f"{router.url}/ui/#/overview")
                charts = wait_until(
                    lambda: driver.find_elements("css selector", "svg.chart polyline"), what="charts", driver=driver
                )
                assert len(driver.find_elements("css selector", "svg.chart")) == 3 and charts
                screenshot(driver, "overview")
                assert browser_errors(driver) == []

        await asyncio.to_thread(browse)
        await router.wait_for_log(lambda r: r.get("outcome") == "sent" and r.get("event_id") == "evt-dead-2")
        await router.wait_for_log(lambda r: r.get("outcome") == "sent" and r.get("event_id") == "evt-dead-1")
    finally:
        await router.stop()


async def test_with_a_bearer_token_the_console_asks_for_it(tmp_path: Path, sinks: dict[str, Any]) -> None:
    token = "ui-token-0123456789abcdef0123"
    extra = 'ui: {auth: {bearer: "${ROUTER_UI_TOKEN}"}}\n'
    router = await start_router(tmp_path, sinks, extra=extra, env={"ROUTER_UI_TOKEN": token})
    try:
        data = {"order": "T-1", "note": "n", "total": "1", "link": "https://shop.example"}
        await publish(router, {"id": "evt-token", "type": "order.paid", "source": "shop", "data": data})
        await sinks["discord"].wait_for(1)

        def browse() -> None:
            with chromium() as driver:
                driver.get(f"{router.url}/ui/")
                field = wait_until(
                    lambda: driver.find_element("css selector", "form.login input[name=token]"),
                    what="the sign-in form",
                    driver=driver,
                )
                field.send_keys("wrong-token-0123456789abcdef")
                field.submit()
                # The form is drawn again with a refusal; wait for the new one, not the old field.
                refusal = wait_until(
                    lambda: driver.find_element("css selector", "form.login [role=alert]"), what="the refusal"
                )
                assert "not accepted" in refusal.text
                field = driver.find_element("css selector", "form.login input[name=token]")
                assert not driver.find_elements("css selector", "tr[data-event-id]")
                field.send_keys(token)
                field.submit()
                wait_until(
                    lambda: driver.find_elements("css selector", 'tr[data-event-id="evt-token"]'),
                    what="the list once signed in",
                    driver=driver,
                )
                assert token not in driver.page_source

        await asyncio.to_thread(browse)
        assert token not in router.logs()
    finally:
        await router.stop()


def test_screenshots_folder_is_ignored_by_git() -> None:
    ignored = (Path(__file__).parent.parent / ".gitignore").read_text().splitlines()
    assert "tests/screenshots/" in ignored


def test_without_chromium_the_browser_tests_skip_saying_why_and_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.browser_support as support

    monkeypatch.setattr(support.shutil, "which", lambda name: None)
    monkeypatch.setattr(support, "Path", lambda *a: type("Missing", (), {"exists": lambda self: False})())
    monkeypatch.setattr(support, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        support.find_browser()
    monkeypatch.setattr(support, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs them"):
        support.find_browser()
