"""bench/harness.py: the switch that runs every scenario without the activity history (bench/README.md)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import harness


@pytest.fixture(autouse=True)
def workspaces_in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def config(monkeypatch: pytest.MonkeyPatch, switch: str | None, **extra: object) -> dict[str, object]:
    if switch is None:
        monkeypatch.delenv(harness.ACTIVITY_SWITCH, raising=False)
    else:
        monkeypatch.setenv(harness.ACTIVITY_SWITCH, switch)
    workspace = harness.make_workspace(
        broker={"url": "embedded"}, channels={"sink": {"type": "null"}}, rules=[], extra=extra or None
    )
    return dict(yaml.safe_load(workspace.config.read_text()))


def test_scenarios_keep_the_history_unless_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "activity" not in config(monkeypatch, None)
    assert config(monkeypatch, "off")["activity"] is False
    assert config(monkeypatch, "OFF")["activity"] is False


def test_a_scenario_that_sets_activity_itself_is_not_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config(monkeypatch, "off", activity={"retention": "1h"})["activity"] == {"retention": "1h"}
