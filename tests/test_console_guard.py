"""The guard of /ui/ and /api/: on or off by the --http address and ui.auth, authentication,
CSRF on state-changing requests, and the security headers, over real HTTP.

The guard is exercised on an aiohttp app served on loopback with a stand-in /api/ handler
(the real API is activity-core's); tests/test_console_browser.py runs the whole console
against a real `router serve`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.config.models import RouterConfig
from router.console import routes
from router.console.guard import CONTENT_SECURITY_POLICY, ConsoleGuard, is_loopback
from tests.fakes.http_sink import free_port
from tests.serve_support import RouterProcess

TOKEN = "console-token-0123456789abcdef"
PASSWORD = "console-password-0123456789"


def config(auth: dict[str, Any] | None = None) -> RouterConfig:
    return RouterConfig.model_validate({"ui": {"auth": auth}} if auth else {})


Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(cfg: RouterConfig | Callable[[], RouterConfig], host: str = "127.0.0.1") -> str:
        app = web.Application()
        routes.install(app, ConsoleGuard(cfg if callable(cfg) else lambda: cfg, host))

        async def echo(request: web.Request) -> web.Response:
            return web.json_response({"ok": True, "method": request.method})

        app.router.add_get("/api/echo", echo)
        app.router.add_post("/api/echo", echo)
        app.router.add_get("/other", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("router.example.com")


async def test_page_and_static_files_carry_a_strict_csp(serve: Serve) -> None:
    url = await serve(config())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/ui/") as page:
            assert page.status == 200
            html = await page.text()
            assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            assert page.headers["X-Frame-Options"] == "DENY"
            assert "router_csrf" in page.cookies
        # Offline: nothing is loaded from another host.
        assert "http://" not in html and "https://" not in html
        for name in ("app.js", "style.css", "dom.js"):
            async with session.get(f"{url}/ui/static/{name}") as asset:
                assert asset.status == 200, name
                assert asset.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        for bad in ("/ui/static/..%2F__init__.py", "/ui/static/routes.py", "/ui/static/index.html"):
            async with session.get(url + bad) as missing:
                assert missing.status == 404, bad
        for path in ("/", "/ui"):
            async with session.get(url + path, allow_redirects=False) as redirect:
                assert redirect.status == 302 and redirect.headers["Location"] == "/ui/"
        async with session.get(f"{url}/api/echo") as api:
            assert api.headers["Cache-Control"] == "no-store"
        async with session.get(f"{url}/other") as other:  # the guard covers /ui and /api only
            assert "Content-Security-Policy" not in other.headers


def test_console_files_are_small_and_never_use_innerhtml() -> None:
    static = Path(routes.__file__).parent / "static"
    total = sum(path.stat().st_size for path in static.iterdir())
    assert total < 100_000, f"the console grew to {total} bytes"
    for script in static.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{script.name} uses {sink}"


async def test_state_changing_requests_need_the_csrf_token(serve: Serve) -> None:
    url = await serve(config())
    # unsafe=True: aiohttp's jar otherwise keeps no cookie from an IP address such as 127.0.0.1.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{url}/api/echo", json={}) as bare:
            assert bare.status == 403
            assert "CSRF" in (await bare.json())["error"]
        async with session.get(f"{url}/ui/") as page:  # sets the cookie (its value, HttpOnly, for /api/csrf)
            token = page.cookies["router_csrf"].value
        async with session.post(f"{url}/api/echo", json={}, headers={"X-CSRF-Token": "not-" + token}) as wrong:
            assert wrong.status == 403
        headers = {"X-CSRF-Token": token}
        async with session.post(f"{url}/api/echo", json={}, headers=headers) as right:
            assert right.status == 200
        same_host = {**headers, "Origin": "https://" + url.removeprefix("http://")}  # TLS ended by a proxy
        async with session.post(f"{url}/api/echo", json={}, headers=same_host) as proxied:
            assert proxied.status == 200
        foreign = {**headers, "Origin": "http://evil.example"}
        async with session.post(f"{url}/api/echo", json={}, headers=foreign) as cross:
            assert cross.status == 403
            assert "origin" in (await cross.json())["error"]
    # A header alone (no cookie: another site cannot read it) is refused.
    async with aiohttp.ClientSession() as fresh, fresh.post(f"{url}/api/echo", json={}, headers=headers) as alone:
        assert alone.status == 403


async def test_bearer_token_guards_the_api_not_the_empty_page(serve: Serve) -> None:
    url = await serve(config({"bearer": TOKEN}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/ui/") as page:  # holds no data; its script asks for the token
            assert page.status == 200
        async with session.get(f"{url}/api/echo") as missing:
            assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer ")
            assert TOKEN not in await missing.text()
        async with session.get(f"{url}/api/echo", headers={"Authorization": "Bearer wrong-token-0123456789"}) as wrong:
            assert wrong.status == 401
        async with session.get(f"{url}/api/echo", headers=auth) as right:
            assert right.status == 200
        # The token does not replace the CSRF check.
        async with session.post(f"{url}/api/echo", json={}, headers=auth) as post:
            assert post.status == 403


async def test_credentials_are_compared_in_constant_time(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from router.console import guard

    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:  # hmac's own, recorded
        compared.append((given, expected))
        return original(given, expected)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    url = await serve(config({"bearer": TOKEN}))
    async with aiohttp.ClientSession() as session:
        for value in (TOKEN, "wrong-token-0123456789"):
            async with session.get(f"{url}/api/echo", headers={"Authorization": f"Bearer {value}"}):
                pass
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"wrong-token-0123456789", TOKEN.encode())]
    compared.clear()
    url = await serve(config({"basic": {"user": "ops", "password": PASSWORD}}))
    good = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/echo", headers={"Authorization": good}):
        pass
    assert compared == [(f"ops:{PASSWORD}".encode(), f"ops:{PASSWORD}".encode())]


async def test_basic_auth_guards_page_and_api(serve: Serve) -> None:
    url = await serve(config({"basic": {"user": "ops", "password": PASSWORD}}))
    good = {"Authorization": "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ops:guess-guess-guess").decode()}
    async with aiohttp.ClientSession() as session:
        for path in ("/ui/", "/ui/static/app.js", "/api/echo"):
            async with session.get(url + path) as missing:
                assert missing.status == 401, path
                assert missing.headers["WWW-Authenticate"].startswith("Basic ")
            async with session.get(url + path, headers=bad) as wrong:
                assert wrong.status == 401, path
            async with session.get(url + path, headers=good) as right:
                assert right.status == 200, path
        # Basic credentials are sent by the browser by itself: POST still needs the CSRF token.
        async with session.post(f"{url}/api/echo", json={}, headers=good) as post:
            assert post.status == 403


async def test_beyond_loopback_without_auth_the_console_stays_off(serve: Serve) -> None:
    url = await serve(config(), host="0.0.0.0")
    async with aiohttp.ClientSession() as session:
        for path in ("/ui/", "/api/echo", "/"):
            async with session.get(url + path, allow_redirects=False) as off:
                assert off.status == 404, path
                assert "ui.auth" in (await off.json())["error"]
        async with session.get(f"{url}/other") as other:
            assert other.status == 200
    url = await serve(config({"bearer": TOKEN}), host="0.0.0.0")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/ui/") as on:
        assert on.status == 200


async def test_a_reload_that_adds_or_removes_ui_auth_applies_to_the_next_request(serve: Serve) -> None:
    # The guard reads the configuration in force per request: no restart beyond loopback.
    holder = {"config": config()}
    url = await serve_current(serve, holder, host="0.0.0.0")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/echo", headers=auth) as off:
            assert off.status == 404 and "ui.auth" in (await off.json())["error"]
        holder["config"] = config({"bearer": TOKEN})  # a reload adds ui.auth
        async with session.get(f"{url}/api/echo") as missing:
            assert missing.status == 401
        async with session.get(f"{url}/api/echo", headers=auth) as on:
            assert on.status == 200
        holder["config"] = config()  # and one that removes it again
        async with session.get(f"{url}/api/echo", headers=auth) as off_again:
            assert off_again.status == 404


async def serve_current(serve: Serve, holder: dict[str, RouterConfig], host: str) -> str:
    """Serve with a guard that reads ``holder["config"]`` at each request, as after a reload."""
    return str(await serve(lambda: holder["config"], host=host))


async def test_csrf_endpoint_hands_out_the_cookie_and_its_value(serve: Serve) -> None:
    url = await serve(config())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{url}/api/csrf") as first:
            answer = await first.json()
            assert answer["header"] == "X-CSRF-Token" and first.cookies["router_csrf"].value == answer["token"]
            assert first.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        async with session.get(f"{url}/api/csrf") as again:  # the same pair while the cookie lives
            assert (await again.json())["token"] == answer["token"]
        async with session.post(f"{url}/api/echo", json={}, headers={"X-CSRF-Token": answer["token"]}) as post:
            assert post.status == 200


def test_the_activity_api_mounts_only_behind_the_guard() -> None:
    from router.activity.api import ActivityApi, mount

    with pytest.raises(RuntimeError, match="console guard"):
        mount(web.Application(), ActivityApi(None))
    app = web.Application()
    routes.install(app, ConsoleGuard(lambda: config(), "127.0.0.1"))
    mount(app, ActivityApi(None))
    assert "/api/activity" in {r.resource.canonical for r in app.router.routes() if r.resource is not None}


@pytest.mark.integration
async def test_serve_beyond_loopback_logs_why_the_console_is_off(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("{% block title %}t{% endblock %}{% block body %}b{% endblock %}")
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nbroker: {embedded_path: queue.db}\nstate: {url: 'sqlite:///state.db'}\n"
        "channels: {out: {type: console}}\nrules: [{name: r, on: 'a.b', channels: [out], template: t}]\n"
    )
    router = RouterProcess(tmp_path)
    # Every interface (the last --http wins); probed through loopback.
    router.args = ("--http", f"0.0.0.0:{router.port}")
    await router.start()
    try:
        record = await router.wait_for_log(lambda r: "console are off" in r.get("msg", ""))
        assert "ui.auth" in record["msg"] and "0.0.0.0" in record["msg"]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{router.url}/ui/") as page:
                assert page.status == 404
            async with session.get(f"{router.url}/healthz") as health:  # the rest of the port works
                assert health.status == 200
    finally:
        await router.stop()
