"""`router test --explain` shows, for each rule that fires, what flow control would do and on which key."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from router.cli import cli
from router.core.events import event_from_object
from router.flow.explain import describe_flow
from router.plugins.manager import build_registry, get_plugin_manager
from router.runtime.runtime import build_runtime
from tests.engine_support import write_config

CONFIG = """
version: 1
channels:
  chat: {type: discord, url: "https://discord.com/api/webhooks/123/abc"}
  hook: {type: webhook, url: "https://example.com/h", rate_limit: {limit: 10, period: 1m}}
  console: {type: console}
rules:
  - name: everything
    on: planet.completed
    template: t
    channels: [chat, hook, console]
    dedupe: {key: "{{ data.user.id }}:{{ data.planet.id }}", window: 24h}
    rate_limit: {limit: 100, period: 1h}
    throttle: {limit: 10, period: 1m, key: "{{ data.user.id }}"}
    digest: {window: 5m, max_events: 50, key: "{{ data.space.id }}"}
  - name: broken-key
    on: planet.completed
    template: t
    channels: [console]
    dedupe: {key: "{{ data.nope.id }}", window: 1h}
"""

EVENT = {"type": "planet.completed", "data": {"user": {"id": 42}, "planet": {"id": 7}, "space": {"id": "s1"}}}


def runtime_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, CONFIG, {"t.j2": "{{ data.user.id }}"})
    return build_runtime(path, build_registry(get_plugin_manager(load_entry_points=False)))


def test_every_decision_is_described_with_its_rendered_key(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    lines = describe_flow(runtime, runtime.rule("everything"), event_from_object(EVENT))
    assert lines[0] == "dedupe: key '42:7': skipped if another event with this key was seen in the last 1d"
    assert lines[1].startswith("rate_limit: one key for the whole rule: at most 100 per 1h")
    assert "dropped and counted" in lines[1]
    assert lines[2].startswith("throttle: key '42': 10 per 1m (burst 10)") and "never dropped" in lines[2]
    assert lines[3].startswith("digest: key 's1': collected for 5m or until 50 events")
    assert lines[4].startswith("channel chat: paced to 5 per 2s") and "folded into one summary" in lines[4]
    assert lines[5].startswith("channel hook: paced to 10 per 1m") and "waiting, durably" in lines[5]
    assert len(lines) == 6, "the console channel has no rate limit"


def test_a_key_that_does_not_render_is_reported_not_raised(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    [line] = describe_flow(runtime, runtime.rule("broken-key"), event_from_object(EVENT))
    assert line.startswith("dedupe: key does not render for this event:") and "nope" in line


def test_router_test_explain_prints_flow_under_each_fired_rule(tmp_path: Path) -> None:
    runtime_for(tmp_path)
    (tmp_path / "event.json").write_text(json.dumps(EVENT))
    args = ["test", str(tmp_path / "event.json"), "-c", str(tmp_path / "rules.yaml")]
    result = CliRunner().invoke(cli, [*args, "--explain"])
    assert result.exit_code == 0, result.output
    assert "  ✓ everything -> chat, hook, console\n      dedupe: key '42:7'" in result.output
    plain = CliRunner().invoke(cli, args)
    assert "dedupe" not in plain.output
    as_json = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert as_json["flow"]["everything"][0].startswith("dedupe: key '42:7'")
