"""Plugin code raising BaseException (CancelledError, SystemExit, KeyboardInterrupt,
GeneratorExit) fails like any plugin error, against a real `router serve`; a consumer that stops
making progress while messages wait turns /readyz to 503 and logs why (app/watchdog.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import embedded_rules, post_events, setup_project

PLUGIN = """
import asyncio

from router import Job, hookimpl

RAISE = {
    "cancel": asyncio.CancelledError,
    "exit": lambda: SystemExit(3),
    "interrupt": KeyboardInterrupt,
    "generator": GeneratorExit,
}


def _raise(mode):
    error = RAISE[mode]
    raise error()


class Explode(Job):
    name = "explode"

    async def handle(self, ctx):
        _raise(ctx.event.data["mode"])


@hookimpl
def register_jobs(register):
    register(Explode)


@hookimpl
async def event_received(event):
    mode = event.data.get("hook")
    if mode == "hang":
        await asyncio.Event().wait()  # never settles: holds a prefetch slot for good
    if mode:
        _raise(mode)
    return None
"""


def install_plugin(site: Path) -> None:
    """A plugin found by importlib.metadata on PYTHONPATH: a module and a .dist-info beside it."""
    site.mkdir()
    (site / "baseexc_plugin.py").write_text(PLUGIN)
    info = site / "baseexc_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: baseexc-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[router]\nbaseexc = baseexc_plugin\n")


def plugin_env(site: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*filter(None, [env.get("PYTHONPATH")]), str(site)])
    env.pop("ROUTER_LOAD_PLUGINS", None)
    return {**env, **extra}


async def test_hooks_and_jobs_raising_base_exceptions_fail_like_any_plugin_error(tmp_path: Path) -> None:
    install_plugin(tmp_path / "site")
    async with HttpSink() as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}'}}",
                "  - {name: note, on: note, template: note, channels: [hook]}\n"
                "  - {name: boom, on: boom, job: explode}",
                retry="{attempts: 2, backoff: 50ms, jitter: 0}",
            ),
        )
        router = await RouterProcess(tmp_path, env=plugin_env(tmp_path / "site")).start()
        try:
            modes = ["cancel", "exit", "interrupt", "generator"]
            # Hooks raising on more events than there are prefetch slots, then jobs raising.
            await post_events(router, [{"type": "note", "data": {"n": i, "hook": modes[i % 4]}} for i in range(12)])
            await post_events(router, [{"type": "boom", "data": {"n": i, "mode": m}} for i, m in enumerate(modes)])
            await post_events(router, {"type": "note", "id": "after", "data": {"n": 99}})
            await hook.wait_for(13)  # every hooked event still delivered (the hook is skipped)
            deadline = time.monotonic() + 20
            while len([r for r in router.log_records() if r.get("reason") == "exhausted"]) < 4:
                assert time.monotonic() < deadline, router.logs()[-3000:]
                await asyncio.sleep(0.05)
            assert router.proc is not None and router.proc.poll() is None, "the process survived SystemExit"
            logs = router.logs()
            for name in ("CancelledError", "SystemExit", "KeyboardInterrupt", "GeneratorExit"):
                assert f"job explode raised {name}" in logs
            assert "Task exception was never retrieved" not in logs
            async with aiohttp.ClientSession() as session, session.get(f"{router.url}/readyz") as response:
                assert response.status == 200
        finally:
            await router.stop()


async def test_a_consumer_that_stops_making_progress_turns_readyz_to_503(tmp_path: Path) -> None:
    install_plugin(tmp_path / "site")
    async with HttpSink() as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}'}}",
                "  - {name: note, on: note, template: note, channels: [hook]}",
                broker="{prefetch: 2}",
            ),
        )
        env = plugin_env(tmp_path / "site", ROUTER_STALL_SECONDS="1")
        router = await RouterProcess(tmp_path, env=env, args=("--shutdown-timeout", "1")).start()
        try:
            await post_events(router, [{"type": "note", "data": {"n": i, "hook": "hang"}} for i in range(2)])
            await post_events(router, [{"type": "note", "data": {"n": i}} for i in range(3)])  # wait behind them
            record = await router.wait_for_log(lambda r: "consumer stalled" in r.get("msg", ""), timeout=20)
            assert record.get("waiting") == 3
            async with aiohttp.ClientSession() as session, session.get(f"{router.url}/readyz") as response:
                assert response.status == 503
            assert hook.requests == []
        finally:
            await router.stop()
