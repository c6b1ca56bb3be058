"""A local HTTP sink for the benchmarks: answers 200 to any POST and records what arrived.

Run: ``python bench/sink.py --port 9100`` (the benchmarks start it themselves).

Each request body is searched for ``id=<event id> ts=<publish stamp>`` (the benchmark
templates render that line), so the sink can tell distinct events from repeats, whatever the
payload format (the router's webhook JSON or apprise's ``json://``); a body without it is
read as the event itself (``id`` and ``data.ts``), as the raw consumer posts it. The arrival stamp is
``time.monotonic()`` (system-wide on Linux, comparable with the publisher's).

``GET /stats`` returns ``{requests, distinct, duplicates, unparsed, first, last}`` and with
``?arrivals=1`` also ``arrivals: [[ts, arrived], ...]``; ``POST /reset`` starts over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from aiohttp import web

PATTERN = re.compile(rb"id=([0-9A-Za-z_-]+) ts=([0-9.eE+-]+)")


class Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.unparsed = 0
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.first: float | None = None
        self.last: float | None = None
        self.arrivals: list[tuple[float, float]] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        self.requests += 1
        if self.first is None:
            self.first = now
        self.last = now
        found = PATTERN.search(body)
        if found is not None:
            key, ts = found.group(1), float(found.group(2))
        else:
            try:  # an event posted as it is (the raw consumer of the latency benchmark)
                event = json.loads(body)
                key, ts = str(event["id"]).encode(), float(event["data"]["ts"])
            except (ValueError, KeyError, TypeError):
                self.unparsed += 1
                return web.Response(text="ok")
        if key in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(key)
            self.arrivals.append((ts, now))
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        document = {
            "requests": self.requests,
            "distinct": len(self.seen),
            "duplicates": self.duplicates,
            "unparsed": self.unparsed,
            "first": self.first,
            "last": self.last,
        }
        if request.query.get("arrivals"):
            document["arrivals"] = self.arrivals
        return web.json_response(document)

    async def do_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.Response(text="reset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    recorder = Recorder()
    app = web.Application()
    app.router.add_get("/stats", recorder.stats)
    app.router.add_post("/reset", recorder.do_reset)
    app.router.add_route("*", "/{tail:.*}", recorder.hook)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
