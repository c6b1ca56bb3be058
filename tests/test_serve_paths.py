"""Relative SQLite paths (the state URL, the embedded queue) resolve against the folder of
rules.yaml in every command, whatever the working directory (docs/configuration.md)."""

from __future__ import annotations

import json
from pathlib import Path

from router.config.loader import load_config
from router.plugins.manager import build_registry, get_plugin_manager
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import embedded_rules, post_events, run_cli, setup_project


def test_the_loader_anchors_relative_paths_to_the_folder_of_rules_yaml(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    setup_project(
        project, embedded_rules("  c: {type: console}", "  - {name: n, on: '**', template: note, channels: [c]}")
    )
    loaded = load_config(project / "rules.yaml", build_registry(get_plugin_manager()))
    assert loaded.config.state.url == f"sqlite:///{project}/state.db"
    assert loaded.config.broker.embedded_path == str(project / ".router" / "queue.db")


async def test_serve_and_dlq_from_another_directory_use_the_files_beside_rules_yaml(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = str(project / "rules.yaml")
    async with HttpSink(default=Reply(400)) as down:
        setup_project(
            project,
            embedded_rules(
                f"  down: {{type: webhook, url: '{down.url}'}}",
                "  - {name: note, on: '**', template: note, channels: [down]}",
            ),
        )
        router = await RouterProcess(elsewhere, args=("-c", config)).start()
        try:
            await post_events(router, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
            await router.wait_for_log(lambda r: r.get("outcome") == "failed")
        finally:
            await router.stop()
        assert (project / ".router" / "queue.db").exists() and (project / "state.db").exists()

        # From a third directory: the same dead letter, and no new queue file there.
        listed = json.loads(await run_cli(elsewhere, "dlq", "list", "--json", "-c", config))
        assert [letter["event_id"] for letter in listed] == ["evt-1"]
        assert sorted(p.name for p in elsewhere.iterdir() if not p.name.startswith("router-")) == []

        # A restart from the working directory of the project sees the same ledger and queue.
        down.default = Reply(204)
        assert (await run_cli(project, "dlq", "replay", "--all")).strip() == "replayed 1 dead letter"
        router = await RouterProcess(elsewhere, args=("-c", config)).start()
        try:
            await down.wait_for(2)
            await router.wait_for_log(lambda r: r.get("outcome") == "sent")
        finally:
            await router.stop()
