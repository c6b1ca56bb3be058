"""Serve the console: ``/`` and ``/ui`` redirect to ``/ui/``, which is the single page; its
JavaScript modules and stylesheet come from ``static/`` under ``/ui/static/``.

The files are read once when the app is built (they are small: see docs/activity.md) and
served from memory by name; nothing outside that folder can be asked for. The page sets the
``router_csrf`` cookie its state-changing requests echo (see :mod:`.guard`); the page (or any
API client) reads the value from ``GET /api/csrf``, served here, since that cookie is HttpOnly.
"""

from __future__ import annotations

import logging
from importlib import resources

from aiohttp import web

from router.console.guard import CSRF_COOKIE, CSRF_HEADER, ConsoleGuard, middleware, new_csrf_token

log = logging.getLogger("router.console")

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/``, by name, with its content type."""
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("router.console").joinpath("static")
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in CONTENT_TYPES:
            files[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return files


def install(app: web.Application, guard: ConsoleGuard) -> None:
    """Add the console's routes and the guard of /ui/ and /api/ to ``app`` (before it starts)."""
    files = load_static()
    index, _ = files.pop("index.html")

    async def to_console(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def page(request: web.Request) -> web.Response:
        response = web.Response(body=index, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        if not request.cookies.get(CSRF_COOKIE):
            # Sent to this site only; the page learns the value from GET /api/csrf.
            response.set_cookie(CSRF_COOKIE, new_csrf_token(), path="/", samesite="Strict", httponly=True)
        return response

    async def static(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def csrf(request: web.Request) -> web.Response:
        # The double-submit pair: the cookie (HttpOnly) and its value, for the X-CSRF-Token header.
        token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        response = web.json_response({"token": token, "header": CSRF_HEADER, "cookie": CSRF_COOKIE})
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    app.middlewares.append(middleware(guard))
    app.router.add_get("/api/csrf", csrf)
    app.router.add_get("/", to_console)
    app.router.add_get("/ui", to_console)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/static/{name}", static)
