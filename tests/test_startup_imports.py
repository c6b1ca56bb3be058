"""Start-up cost: what `router --help` and `router check` import (issue 16, A1).

Timing lives in bench/bench_startup.py; these tests pin the structure that makes the
commands fast: heavy libraries are imported only by the code that uses them, and the
public API still resolves through the lazy re-exports in router/__init__.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ["apprise", "aio_pika", "aiormq", "aiohttp", "jsonschema", "prometheus_client", "redis", "pydantic", "jinja2"]


def _all_modules_after(code: str, *argv: str) -> set[str]:
    """Every module loaded after running ``code`` in a fresh interpreter at the repository root."""
    probe = (
        "import sys, json\n"
        f"sys.argv = ['router', *{list(argv)!r}]\n"
        "try:\n"
        f"    {code}\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    # The router's own imports: installed plugins (say, bench/router-bench-plugin) import what they like.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROUTER_LOAD_PLUGINS": ""}
    env.pop("ROUTER_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return set(loaded)


def _modules_after(code: str, *argv: str) -> set[str]:
    """The heavy modules loaded after running ``code`` in a fresh interpreter at the repository root."""
    return _all_modules_after(code, *argv) & set(HEAVY)


def test_help_and_version_import_nothing_heavy() -> None:
    assert _modules_after("from router.cli import main; main()", "--help") == set()
    assert _modules_after("from router.cli import main; main()", "--version") == set()
    assert _modules_after("import router") == set()


def test_check_on_the_shipped_config_skips_transport_and_delivery_libraries() -> None:
    loaded = _all_modules_after("from router.cli import main; main()", "check")
    heavy = {"apprise", "aio_pika", "aiormq", "aiohttp", "jsonschema", "prometheus_client", "redis"}
    # Nor what only sending, running or a `regex:` condition needs: asyncio (with ssl, sockets and
    # subprocesses), smtplib (classifying SMTP failures), RE2.
    assert loaded.isdisjoint(heavy | {"asyncio", "smtplib", "re2"}), sorted(
        loaded & (heavy | {"asyncio", "smtplib", "re2"})
    )


def test_test_command_without_explain_skips_metrics() -> None:
    loaded = _modules_after("from router.cli import main; main()", "test", "examples/planet_completed.json")
    assert "prometheus_client" not in loaded and "apprise" not in loaded


RENDER = ["render", "--rule", "planet-completed", "--event", "examples/planet_completed.json"]


def test_render_json_builds_only_the_apprise_plugin_it_previews() -> None:
    # `router render --json` shows the Discord body as posted, built by apprise's own payload code;
    # finding the plugin by URL scheme would import every apprise service module (about 100, ~0.35 s).
    loaded = _all_modules_after("from router.cli import main; main()", *RENDER, "--json")
    plugins = {m for m in loaded if m.startswith("apprise.plugins.")}
    assert "apprise.plugins.discord" in plugins  # the preview did go through apprise
    assert len(plugins) <= 5, sorted(plugins)


def test_render_as_text_of_plain_messages_loads_no_delivery_library() -> None:
    # The text output shows a posted body only for a message from a channel block; the shipped
    # planet-completed rule has none, so nothing builds the Discord body (apprise, requests).
    loaded = _all_modules_after("from router.cli import main; main()", *RENDER)
    assert loaded.isdisjoint({"apprise", "requests", "aiohttp", "asyncio"}), sorted(
        loaded & {"apprise", "requests", "aiohttp", "asyncio"}
    )


def test_public_api_still_imports_from_router() -> None:
    import router
    from router import Channel, ChannelConfig, Event, Message, Publisher, hookimpl

    assert Channel.__module__ == "router.channels.base"
    assert ChannelConfig.__name__ == "ChannelConfig"
    assert Event.__module__ == "router.core.events"
    assert Message.__module__ == "router.core.message"
    assert Publisher.__module__ == "router.ingest.publisher"
    assert callable(hookimpl)
    for name in router.__all__:
        assert getattr(router, name) is not None
    assert set(router.__all__) <= set(dir(router))


def test_unknown_attribute_is_an_attribute_error() -> None:
    import router

    try:
        router.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("expected AttributeError")
