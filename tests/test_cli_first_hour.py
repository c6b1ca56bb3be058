"""The first hour with the CLI (issue 16, part A): `router init`, a missing rules.yaml, usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from router.app.scaffold import FILES
from router.cli import cli


def invoke(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.delenv("ROUTER_CONFIG", raising=False)
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_init_writes_a_configuration_that_passes_check_and_cases(tmp_path: Path) -> None:
    result = invoke("init", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    for relative in FILES:
        assert (tmp_path / relative).is_file()
        assert f"wrote {relative}" in result.output
    check = invoke("check", cwd=tmp_path)
    assert check.exit_code == 0, check.output
    cases = invoke("test", "--cases", "cases.yaml", cwd=tmp_path)
    assert cases.exit_code == 0, cases.output
    assert "2 passed, 0 failed" in cases.output
    routed = invoke("test", "events/user_signed_up.json", cwd=tmp_path)
    assert routed.exit_code == 0 and "welcome -> console" in routed.output
    rendered = invoke("render", "--rule", "welcome", "--event", "events/user_signed_up.json", cwd=tmp_path)
    assert rendered.exit_code == 0 and "New sign-up: Ada" in rendered.output


def test_init_into_a_new_directory(tmp_path: Path) -> None:
    result = invoke("init", "project", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "cd project && router check" in result.output
    assert invoke("check", "-c", "project/rules.yaml", cwd=tmp_path).exit_code == 0


def test_init_never_overwrites_and_names_the_existing_files(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("mine\n")
    (tmp_path / "cases.yaml").write_text("mine too\n")
    result = invoke("init", cwd=tmp_path)
    assert result.exit_code == 2
    assert "not overwriting existing files: rules.yaml, cases.yaml (nothing was written)" in result.output
    assert (tmp_path / "rules.yaml").read_text() == "mine\n"
    assert not (tmp_path / "templates").exists() and not (tmp_path / "events").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["serve"],
        ["test", "event.json"],
        ["test", "--cases", "cases.yaml"],
        ["render", "--rule", "r", "--event", "event.json"],
        ["publish", "some.event"],
        ["dlq", "list"],
    ],
)
def test_a_missing_rules_yaml_is_exit_2_with_a_hint(tmp_path: Path, args: list[str]) -> None:
    result = invoke(*args, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "rules.yaml: file does not exist" in result.output
    assert "router init" in result.output and "-c PATH" in result.output
    assert len(result.output.strip().splitlines()) == 2


def test_a_missing_config_given_with_c_is_exit_2_too(tmp_path: Path) -> None:
    result = invoke("check", "-c", str(tmp_path / "elsewhere.yaml"), cwd=tmp_path)
    assert result.exit_code == 2
    assert f"{tmp_path / 'elsewhere.yaml'}: file does not exist" in result.output


# -- A7: `router test` renders what each fired rule would send -------------------------------

RENDER_RULES = """\
version: 1
channels:
  console: {type: console}
  chat: {type: discord, url: "https://discord.com/api/webhooks/1/abc", enabled: false}
rules:
  - name: greet
    on: user.signed_up
    template: greet
    channels: [console, chat]
"""


def render_project(tmp_path: Path, base: str, discord: str | None = None) -> Path:
    (tmp_path / "rules.yaml").write_text(RENDER_RULES)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "greet.j2").write_text(base)
    if discord is not None:
        (tmp_path / "templates" / "greet.discord.j2").write_text(discord)
    (tmp_path / "event.json").write_text('{"type": "user.signed_up", "data": {"user": {"name": "Ada"}}}')
    (tmp_path / "cases.yaml").write_text(
        "- name: greets\n  event: event.json\n  expect: {rules: [greet], channels: [console, chat]}\n"
    )
    return tmp_path


def test_test_reports_a_template_typo_with_template_and_line(tmp_path: Path) -> None:
    render_project(
        tmp_path, "{% block title %}Hi{% endblock %}\n{% block body %}\n{{ data.usr.name }}\n{% endblock %}\n"
    )
    result = invoke("test", "event.json", cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert "✓ greet -> console, chat (disabled)" in result.output
    assert "template fails to render: rule greet -> console (console): greet.j2, line 3:" in result.output
    assert "'data' has no attribute 'usr'" in result.output
    as_json = invoke("test", "--json", "event.json", cwd=tmp_path)
    assert as_json.exit_code == 1
    assert '"render_errors": [' in as_json.output and '"channel": "chat"' in as_json.output
    cases = invoke("test", "--cases", "cases.yaml", cwd=tmp_path)
    assert cases.exit_code == 1
    assert "FAIL greets: template fails to render: rule greet -> console (console): greet.j2, line 3" in cases.output


def test_test_renders_each_channel_type_override(tmp_path: Path) -> None:
    """The console message renders; the discord override has the typo: only discord fails."""
    render_project(
        tmp_path,
        "{% block body %}{{ data.user.name }}{% endblock %}\n",
        discord='{% extends "greet.j2" %}\n{% block body %}{{ data.user.nmae }}{% endblock %}\n',
    )
    result = invoke("test", "event.json", cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert "rule greet -> chat (discord): greet.discord.j2, line 2:" in result.output
    assert "-> console (console)" not in result.output
    assert invoke("test", "--cases", "cases.yaml", cwd=tmp_path).exit_code == 1


def test_test_passes_when_every_template_renders(tmp_path: Path) -> None:
    render_project(tmp_path, "{% block body %}{{ data.user.name }}{% endblock %}\n")
    assert invoke("test", "event.json", cwd=tmp_path).exit_code == 0
    assert invoke("test", "--cases", "cases.yaml", cwd=tmp_path).exit_code == 0


# -- A8: `test --explain` says which channels are disabled -----------------------------------


def test_explain_marks_disabled_channels(tmp_path: Path) -> None:
    render_project(tmp_path, "{% block body %}{{ data.user.name }}{% endblock %}\n")
    result = invoke("test", "--explain", "event.json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "✓ greet -> console, chat (disabled)" in result.output
    assert "channel chat: disabled (enabled: false): nothing is sent to it" in result.output
    assert "channels: console, chat (disabled)" in result.output
    assert "console (disabled)" not in result.output
    as_json = invoke("test", "--json", "event.json", cwd=tmp_path)
    assert '"disabled_channels": [\n    "chat"\n  ]' in as_json.output


# -- A6: a bad --log-level is a usage error --------------------------------------------------


def test_unknown_log_level_is_a_one_line_usage_error(tmp_path: Path) -> None:
    invoke("init", cwd=tmp_path)
    result = invoke("serve", "--log-level", "foo", "--http", "off", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output == "error: --log-level: 'foo' is not one of DEBUG, INFO, WARNING, ERROR\n"


# -- C4: `router render` applies the event schema as `router test` does ----------------------

SCHEMA_RULES = """\
version: 1
events:
  user.signed_up:
    user: {id: integer, name: string}
channels:
  console: {type: console}
rules:
  - {name: greet, on: user.signed_up, template: greet, channels: [console]}
"""


def test_render_refuses_an_event_that_fails_its_schema_as_test_does(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(SCHEMA_RULES)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "greet.j2").write_text("{% block body %}{{ data.user.name }}{% endblock %}")
    (tmp_path / "bad.json").write_text('{"type": "user.signed_up", "data": {"user": {"id": "7", "name": "Ada"}}}')
    (tmp_path / "good.json").write_text('{"type": "user.signed_up", "data": {"user": {"id": 7, "name": "Ada"}}}')
    for args in (["--rule", "greet"], ["greet"]):
        refused = invoke("render", *args, "--event", "bad.json", cwd=tmp_path)
        assert refused.exit_code == 1, refused.output
        assert "bad.json: does not match the schema declared for 'user.signed_up'" in refused.output
        assert "data.user.id: expected integer, got string" in refused.output
        assert "Ada" not in refused.output
    assert invoke("test", "bad.json", cwd=tmp_path).exit_code == 1  # the same verdict
    rendered = invoke("render", "--rule", "greet", "--event", "good.json", cwd=tmp_path)
    assert rendered.exit_code == 0 and "Ada" in rendered.output


# -- A12: shell completion, as README documents it -------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_documented_completion_scripts_are_generated(shell: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"_ROUTER_COMPLETE={shell}_source router" in readme
    env = {**os.environ, "_ROUTER_COMPLETE": f"{shell}_source"}
    code = "import sys; sys.argv[0] = 'router'; from router.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "_ROUTER_COMPLETE" in done.stdout


def test_completion_offers_commands_and_log_levels(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = "from router.cli import main; main()"

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_ROUTER_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("router in", 1) == ["init"]
    assert complete("router serve --log-level ", 3) == ["DEBUG", "INFO", "WARNING", "ERROR"]
    assert "--subject" in complete("router publish --", 2)


# -- A3: the shipped rules.yaml names its queue and exchange from the environment --------------


def test_shipped_config_reads_queue_and_exchange_with_the_defaults() -> None:
    from router.config.loader import load_config
    from router.plugins.manager import build_registry

    shipped = Path(__file__).resolve().parent.parent / "rules.yaml"
    registry = build_registry()
    default = load_config(shipped, registry, env={}).config.broker
    assert (default.queue, default.exchange) == ("router", "events")
    chosen = load_config(shipped, registry, env={"ROUTER_QUEUE": "mine", "ROUTER_EXCHANGE": "ex"}).config.broker
    assert (chosen.queue, chosen.exchange) == ("mine", "ex")
