"""Loading rules.yaml: what a valid file turns into."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.config import LoadedConfig, default_config_path, load_config, load_config_text
from router.core.errors import ConfigError
from router.jobs.base import NoOptions
from router.plugins.registry import Registry
from tests import config_plugins as plugins

DATA = Path(__file__).parent / "data" / "config"


@pytest.fixture
def registry() -> Registry:
    return plugins.make_registry()


def write(folder: Path, text: str, templates: dict[str, str] | None = None) -> Path:
    path = folder / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    tdir = folder / "templates"
    tdir.mkdir(exist_ok=True)
    for name, body in (templates or {}).items():
        (tdir / name).write_text(body)
    return path


def test_design_example_loads(registry: Registry) -> None:
    loaded = load_config(DATA / "design_rules.yaml", registry, env={"DISCORD_WEBHOOK_URL": "https://d.example/1"})

    assert isinstance(loaded, LoadedConfig)
    config = loaded.config
    assert loaded.path == (DATA / "design_rules.yaml").absolute()
    assert loaded.templates_dir == (DATA / "templates").resolve()
    assert config.broker.url == ""  # ${ROUTER_BROKER_URL:-} with the variable unset
    assert config.state.url == f"sqlite:///{DATA}/.router/state.db"  # anchored to the folder of rules.yaml
    assert config.defaults.retry.backoff == 2.0
    assert config.defaults.retry.max_backoff == 600.0
    first, audit = config.rules
    assert first.on == ["planet.completed"]
    assert first.when == {"data.planet.difficulty": {"gte": 3}, "data.user.tier": {"in": ["gold", "platinum"]}}
    assert first.dedupe is not None and first.dedupe.window == 86400.0
    assert audit.on == ["**"]
    assert loaded.channel_configs["discord-general"].url == "https://d.example/1"  # type: ignore[attr-defined]
    assert loaded.channel_configs["team-email"].to == ["team@example.com"]  # type: ignore[attr-defined]
    assert isinstance(loaded.job_options[0], NoOptions)
    assert isinstance(loaded.job_options[1], plugins.AuditWith)
    assert loaded.job_options[1].table == "events"


def test_on_is_a_key_and_yes_no_stay_strings(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """
        channels: {ops: {type: slack, url: "https://hooks.example/x"}}
        rules:
          - name: r
            on: [on, off.duty]
            when: {data.answer: yes, data.flag: true, data.mode: off}
            template: t
            channels: [ops]
        """,
        {"t.j2": "x"},
    )
    rule = load_config(path, registry, env={}).config.rules[0]

    assert rule.on == ["on", "off.duty"]
    assert rule.when == {"data.answer": {"eq": "yes"}, "data.flag": {"eq": True}, "data.mode": {"eq": "off"}}


def test_templates_folder_is_relative_to_the_rules_file(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "tpl").mkdir()
    (folder / "tpl" / "hello.j2").write_text("hi")
    (folder / "rules.yaml").write_text(
        "templates: tpl\n"
        "channels: {ops: {type: slack, url: 'https://h.example'}}\n"
        "rules: [{name: r, on: a.b, template: hello, channels: [ops]}]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    loaded = load_config("../conf/rules.yaml", registry, env={})

    assert loaded.templates_dir == (folder / "tpl").resolve()
    assert loaded.path == (folder / "rules.yaml").resolve()


def test_channel_specific_templates_satisfy_a_rule(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """
        channels:
          ops: {type: slack, url: "https://h.example"}
          chat: {type: discord, url: "https://d.example"}
        rules:
          - {name: r, on: a.b, template: news, channels: [ops, chat]}
        """,
        {"news.slack.j2": "s", "news.discord.j2": "d"},
    )
    assert load_config(path, registry, env={}).config.rules[0].template == "news"


def test_templates_in_subfolders_are_found(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """
        channels: {ops: {type: slack, url: "https://h.example"}}
        rules: [{name: r, on: a.b, template: alerts/disk, channels: [ops]}]
        """,
    )
    (tmp_path / "templates" / "alerts").mkdir()
    (tmp_path / "templates" / "alerts" / "disk.j2").write_text("x")
    assert load_config(path, registry, env={}).config.rules[0].template == "alerts/disk"


def test_job_options_follow_rule_order(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        """
        rules:
          - {name: a, on: x, job: audit.record, with: {table: one}}
          - {name: b, on: y, job: audit.record, with: {table: two, retention_days: 7}}
        """,
    )
    options = load_config(path, registry, env={}).job_options
    assert [(o.table, o.retention_days) for o in options] == [("one", 30), ("two", 7)]  # type: ignore[attr-defined]


def test_merge_keys_resolve(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("x")
    text = textwrap.dedent(
        """
        channels:
          one: &base {type: slack, url: "https://h.example", concurrency: 2}
          two: {<<: *base, concurrency: 5}
        rules: [{name: r, on: a, template: t, channels: [one, two]}]
        """
    )
    loaded = load_config_text(text, registry, base_dir=tmp_path, env={})
    assert loaded.channel_configs["one"].concurrency == 2
    assert loaded.channel_configs["two"].concurrency == 5
    assert loaded.channel_configs["two"].type == "slack"


def test_load_config_text_resolves_against_base_dir(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "templates").mkdir()
    loaded = load_config_text("rules: []\n", registry, base_dir=tmp_path, env={})
    assert loaded.path == Path("<string>")
    assert loaded.templates_dir == (tmp_path / "templates").resolve()
    assert loaded.config.rules == []
    assert loaded.job_options == []


def test_environment_defaults_to_os_environ(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ROUTER_PREFETCH", "17")
    loaded = load_config_text("broker: {prefetch: '${TEST_ROUTER_PREFETCH}'}\n", registry, base_dir=tmp_path)
    assert loaded.config.broker.prefetch == 17


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_CONFIG", raising=False)
    assert default_config_path() == Path("rules.yaml")
    monkeypatch.setenv("ROUTER_CONFIG", "/etc/router/rules.yaml")
    assert default_config_path() == Path("/etc/router/rules.yaml")


def test_missing_file_is_one_problem(tmp_path: Path, registry: Registry) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, registry)
    assert [str(p) for p in caught.value.problems] == [f"{missing}: file does not exist"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, registry: Registry, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, registry)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert "file is empty" in problem.message
