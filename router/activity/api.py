"""The JSON API under ``/api/`` (docs/activity.md): activity, an event's story, dead letters, replay, stats.

Mounted on the serve HTTP app by the app layer (:func:`mount`), always behind the console's
guard (router/console/guard.py), the one place that decides who may use /api/: whether it is
on (the --http address and ``ui.auth``, asked per request, so a reload applies at once),
authentication, CSRF on POST (and ``GET /api/csrf``, a console route) and the security headers.
Nothing here checks them again. Reads go to their own store connection in their own thread,
never the recorder's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from router.activity.query import FilterError, parse_filter, parse_time
from router.activity.records import scrub_text
from router.activity.store import ActivityStore, Filter
from router.core.durations import parse_duration

log = logging.getLogger("router.activity")

GUARD_MARK = "guards_api"  # set on router/console/guard.py's middleware: the API's access is its decision
MAX_REPLAY = 10_000  # events per replay request: a bounded cost
MAX_BODY = 1 << 20

Replay = Callable[[list[str]], Awaitable[dict[str, Any]]]
"""Sends the dead letters of these events back through the router; answers counts (the app layer binds it)."""

T = TypeVar("T")


class ActivityApi:
    """The handlers (``store`` None: ``activity: false``, every endpoint answers 503)."""

    def __init__(
        self,
        store: ActivityStore | None,
        *,
        replay: Replay | None = None,
        explain: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.explain = explain  # adds the not_matched verdicts of the rules in force (app layer)
        self.store = store
        self.replay = replay
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="router-activity-api")

    async def close(self) -> None:
        """Close the reader connection."""
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=False)

    # ----------------------------------------------------------------- plumbing

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def wrap(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Activity off, the store's failures and bad filters, for every handler (access is the guard's)."""

        async def answer(request: web.Request) -> web.StreamResponse:
            if self.store is None:
                return _json({"error": "activity is off (activity: false in rules.yaml)"}, 503)
            try:
                return await handler(request)
            except FilterError as error:
                return _json({"error": str(error)}, 400)
            except web.HTTPException:
                raise
            except Exception as error:
                log.warning("activity API: %s failed: %s", request.path, type(error).__name__)
                return _json({"error": f"the activity store is unavailable ({type(error).__name__})"}, 503)

        return answer

    # ----------------------------------------------------------------- handlers

    async def activity(self, request: web.Request) -> web.StreamResponse:
        flt = parse_filter(request.query)
        store = self._store()
        return _json(await self._read(lambda: store.list_events(flt)))

    async def event(self, request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["event_id"]
        store = self._store()
        story = await self._read(lambda: store.event_story(event_id))
        if story is None:
            return _json({"error": f"no activity recorded for event {event_id[:200]!r}"}, 404)
        return _json(self.explain(story) if self.explain is not None else story)

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        flt = parse_filter(request.query, default_since="7d")
        flt.limit = flt.limit if request.query.get("limit") else 100
        store = self._store()
        return _json({"dead_letters": await self._read(lambda: store.dead_letters(flt)), "next": None})

    async def replay_handler(self, request: web.Request) -> web.StreamResponse:
        if self.replay is None:
            return _json({"error": "replay is not available in this process"}, 503)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json({"error": "request body too large"}, 413)
        try:
            body = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "expected a JSON object with 'event_ids' or 'filter'"}, 400)
        ids = body.get("event_ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_REPLAY:
                return _json({"error": f"event_ids: a list of at most {MAX_REPLAY} strings"}, 400)
            event_ids = list(dict.fromkeys(ids))
        elif isinstance(body.get("filter"), dict):
            params = {str(k): str(v) for k, v in body["filter"].items() if v is not None}
            params.setdefault("outcome", "dead")
            flt = parse_filter(params, default_since="24h")
            store = self._store()
            event_ids = await self._read(lambda: matching_ids(store, flt, MAX_REPLAY))
        else:
            return _json({"error": "expected 'event_ids' (a list) or 'filter' (an object)"}, 400)
        result = await self.replay(event_ids)
        return _json({"matched": len(event_ids), **result})

    async def rules(self, request: web.Request) -> web.StreamResponse:
        store = self._store()
        since = time.time() - 3600
        return _json({"rules": await self._read(lambda: store.rule_stats(since))})

    async def channels(self, request: web.Request) -> web.StreamResponse:
        store = self._store()
        now = time.time()
        return _json({"channels": await self._read(lambda: store.channel_stats(now - 3600, now))})

    async def overview(self, request: web.Request) -> web.StreamResponse:
        try:
            window = parse_duration(request.query.get("window", "1h"))
        except (ValueError, TypeError):
            raise FilterError("window: expected a duration like 1h") from None
        try:
            step = float(request.query.get("step", "60"))
        except ValueError:
            raise FilterError("step: expected a number of seconds") from None
        if not 0 < window <= 7 * 86400 or step <= 0 or window / step > 2000:
            raise FilterError("window: at most 7d, and at most 2000 steps of at least 1s")
        store = self._store()
        now = time.time()
        series = await self._read(lambda: store.overview(now, window, step))
        return _json({"window": window, "step": step, "series": series})

    def _store(self) -> ActivityStore:
        assert self.store is not None  # checked by wrap()
        return self.store


def matching_ids(store: ActivityStore, flt: Filter, most: int) -> list[str]:
    """The event ids of every page of ``flt`` (at most ``most``)."""
    ids: list[str] = []
    flt.limit = 500
    while len(ids) < most:
        page = store.list_events(flt)
        ids += [event["event_id"] for event in page["events"]]
        cursor = page["next"]
        if not cursor:
            break
        at, _, event_id = cursor.partition(":")
        flt.before = (float(at), event_id)
    return ids[:most]


def _json(data: Any, status: int = 200) -> web.Response:
    # Scrubbed once more on the way out: a secret registered after the record was written stays out too.
    # (No-store, nosniff and the rest of the headers are the guard's, on every /api/ answer.)
    text = scrub_text(json.dumps(data, ensure_ascii=False, default=str))
    return web.Response(text=text, status=status, content_type="application/json")


def mount(app: web.Application, api: ActivityApi) -> None:
    """Add the ``/api/`` routes to ``app`` and close the API's store with it.

    Only on an app whose console guard is installed (router/console/routes.py ``install``, which
    app/server.py calls first): the guard is what authenticates and checks CSRF, so without it
    this refuses to mount."""
    if not any(getattr(m, GUARD_MARK, False) for m in app.middlewares):
        raise RuntimeError("the activity API is mounted only behind the console guard (console.routes.install)")
    w = api.wrap
    app.router.add_get("/api/activity", w(api.activity))
    app.router.add_get("/api/events/{event_id}", w(api.event))
    app.router.add_get("/api/dead-letters", w(api.dead_letters))
    app.router.add_post("/api/replay", w(api.replay_handler))
    app.router.add_get("/api/rules", w(api.rules))
    app.router.add_get("/api/channels", w(api.channels))
    app.router.add_get("/api/overview", w(api.overview))

    async def on_cleanup(_app: web.Application) -> None:
        await api.close()

    app.on_cleanup.append(on_cleanup)


__all__ = ["ActivityApi", "mount", "parse_time"]
