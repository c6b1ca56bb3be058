"""Who may use /ui/ and /api/, and what every answer there carries.

- **On or off.** The console and its API are on when ``--http`` binds to loopback only or
  ``ui.auth`` is set. Bound beyond loopback without
  ``ui.auth`` they stay off (404 with the reason) and :meth:`ConsoleGuard.state` says why,
  which `router serve` logs: event payloads are not for whoever reaches the port.
- **Authentication.** ``ui.auth.bearer``: every /api/ request carries
  ``Authorization: Bearer <token>`` (the page itself holds no data; it asks for the token and
  keeps it in the tab's sessionStorage). ``ui.auth.basic``: the browser asks for a user and
  password, for the page and the API alike. Compared in constant time; the secrets are
  registered with :mod:`router.core.redact` and never logged.
- **CSRF.** A state-changing request (anything but GET, HEAD, OPTIONS) must carry the
  ``X-CSRF-Token`` header equal to the ``router_csrf`` cookie the page set (double submit: a
  foreign site can neither read the cookie nor set the header without a CORS preflight, which
  is never granted), and an ``Origin``, when sent, naming this host. Bearer-authenticated
  requests too. ``GET /api/csrf`` (routes.py) hands out the cookie and its value.
- **One place.** The JSON API (router/activity/api.py) checks none of this itself: it is
  mounted only behind this middleware, which asks :meth:`ConsoleGuard.state` per request, so
  a reload that adds, changes or removes ``ui.auth`` applies to the next request, /api/ too.
- **Headers.** A strict Content-Security-Policy (scripts, styles and connections to this
  origin only; no inline script, no framing), ``nosniff``, no referrer, and no caching of API
  answers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from router.config.models import RouterConfig, UiAuthSpec
from router.core.redact import register_secrets

log = logging.getLogger("router.console")

CSRF_COOKIE = "router_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GUARDED_PREFIXES = ("/ui", "/api")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """True when ``host`` (as given to --http) is reachable from this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


class UiAuth:
    """Checks one request against ``ui.auth``."""

    def __init__(self, spec: UiAuthSpec) -> None:
        self._token: bytes | None = None
        self._basic: bytes | None = None
        if spec.bearer is not None:
            token = spec.bearer.get_secret_value()
            register_secrets(token)
            self._token = token.encode()
        elif spec.basic is not None:
            password = spec.basic.password.get_secret_value()
            register_secrets(password)
            self._basic = f"{spec.basic.user}:{password}".encode()

    @property
    def scheme(self) -> str:
        """``bearer`` or ``basic``: the console page asks for a token only in the first case."""
        return "bearer" if self._token is not None else "basic"

    def bearer_ok(self, request: web.Request) -> bool:
        """True when the request carries the configured bearer token."""
        if self._token is None:
            return False
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token)

    def check(self, request: web.Request) -> web.Response | None:
        """None when authenticated, else the 401 to answer."""
        if self._token is not None:
            if self.bearer_ok(request):
                return None
            return _refuse(
                401,
                "authentication required: send 'Authorization: Bearer <token>' (ui.auth.bearer)",
                {"WWW-Authenticate": 'Bearer realm="router"'},
            )
        assert self._basic is not None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
            if hmac.compare_digest(given, self._basic):
                return None
        challenge = {"WWW-Authenticate": 'Basic realm="router console", charset="UTF-8"'}
        return _refuse(401, "authentication required (ui.auth.basic)", challenge)


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """Whether the console is on under one configuration, why not, and how it authenticates."""

    enabled: bool
    reason: str
    auth: UiAuth | None


class ConsoleGuard:
    """The :class:`ConsoleState` of the configuration in force; rebuilt when ``ui`` changes."""

    def __init__(self, config: Callable[[], RouterConfig], host: str) -> None:
        self._config = config
        self._host = host
        self._spec: object = object()
        self._state = ConsoleState(False, "not configured", None)

    def state(self) -> ConsoleState:
        """The state under the configuration in force now (a reload applies to the next request)."""
        ui = self._config().ui
        if ui is not self._spec:
            self._spec = ui
            self._state = self._build(ui.auth)
        return self._state

    def _build(self, spec: UiAuthSpec | None) -> ConsoleState:
        if spec is None:
            if is_loopback(self._host):
                return ConsoleState(True, f"on loopback {self._host}, no ui.auth", None)
            return ConsoleState(
                False,
                f"--http binds {self._host}, beyond loopback, and ui.auth is not set: "
                "set ui.auth (bearer or basic) or bind 127.0.0.1",
                None,
            )
        auth = UiAuth(spec)
        return ConsoleState(True, f"ui.auth {auth.scheme}", auth)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(path: str) -> bool:
    """True for the paths the guard covers: /ui, /ui/..., /api, /api/... (and the / redirect)."""
    return path == "/" or any(path == p or path.startswith(p + "/") for p in GUARDED_PREFIXES)


def middleware(guard: ConsoleGuard) -> Middleware:
    """The aiohttp middleware applying :class:`ConsoleGuard` to /ui/ and /api/ (other paths pass)."""

    @web.middleware
    async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guarded(request.path):
            return await handler(request)
        state = guard.state()
        if not state.enabled:
            return _refuse(404, f"the console is off: {state.reason}", {})
        # The page shell and its static files hold no data: with a bearer token the page must
        # load without one, to ask for it. Everything under /api/ needs it.
        shell_only = request.path.startswith("/ui") or request.path == "/"
        if state.auth is not None and not (shell_only and state.auth.scheme == "bearer"):
            refused = state.auth.check(request)
            if refused is not None:
                return refused
        if request.method not in SAFE_METHODS:
            problem = csrf_problem(request)
            if problem:
                return _refuse(403, problem, {})
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api"):
            response.headers["Cache-Control"] = "no-store"
        return response

    # router/activity/api.py mounts only behind this middleware: it checks none of this itself.
    console_guard.guards_api = True  # type: ignore[attr-defined]
    return console_guard


def csrf_problem(request: web.Request) -> str:
    """Why a state-changing request fails the CSRF check, or "" when it passes."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        return (
            f"CSRF check failed: send the {CSRF_HEADER} header equal to the {CSRF_COOKIE} cookie "
            "(GET /api/csrf gives both; in the console, reload /ui/)"
        )
    origin = request.headers.get("Origin")
    # The host only: behind a TLS-terminating proxy the scheme seen here is http while the
    # browser's Origin says https. The cookie check above is the protection; this is a second.
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        return "CSRF check failed: the request comes from another origin"
    return ""


def new_csrf_token() -> str:
    """A fresh random value for the ``router_csrf`` cookie."""
    return secrets.token_urlsafe(32)


def _refuse(status: int, message: str, headers: dict[str, str]) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    response.headers.update(headers)
    response.headers.update(SECURITY_HEADERS)
    return response
