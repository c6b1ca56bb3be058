"""`router check | test | render | schema | plugins` on the shipped example and on broken input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from router.cli import cli
from tests.builders import event_object

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped example (rules.yaml, templates/, examples/)."""
    for name in ("rules.yaml",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    result = runner.invoke(cli, [*args, "-c", str(project / "rules.yaml")], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_check_passes_on_the_shipped_example(project: Path) -> None:
    result = run(project, "check")
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "planet-completed" in result.output
    assert "console (console)" in result.output


def test_check_reports_invalid_yaml_with_its_place(project: Path) -> None:
    (project / "rules.yaml").write_text("version: 1\nrules: [\n  - name: x\n")
    result = run(project, "check")
    assert result.exit_code == 1
    assert "rules.yaml:" in result.output


def test_check_reports_unknown_key_with_suggestion_and_location(project: Path) -> None:
    text = (
        (project / "rules.yaml").read_text().replace("    template: space_completed", "    tempalte: space_completed")
    )
    (project / "rules.yaml").write_text(text)
    result = run(project, "check")
    assert result.exit_code == 1
    assert "rules[1].tempalte: unknown key; did you mean 'template'?" in result.output
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "tempalte" in row)
    assert f"rules.yaml:{line}:" in result.output


def test_check_reports_wrong_type(project: Path) -> None:
    text = (project / "rules.yaml").read_text().replace("attempts: 5", "attempts: many")
    (project / "rules.yaml").write_text(text)
    result = run(project, "check")
    assert result.exit_code == 1
    assert "defaults.retry.attempts" in result.output


def test_check_reports_missing_env_var_by_name(project: Path) -> None:
    text = (
        (project / "rules.yaml")
        .read_text()
        .replace('"${SMTP_URL:-mailtos://user:pass@smtp.example.com}"', '"${SMTP_URL}"')
    )
    (project / "rules.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["check", "-c", str(project / "rules.yaml")], env={"SMTP_URL": None})
    assert result.exit_code == 1
    assert "SMTP_URL" in result.output
    assert "channels.team-email.url" in result.output


def test_check_reports_template_syntax_error_with_line(project: Path) -> None:
    (project / "templates" / "space_completed.j2").write_text("{% block title %}ok{% endblock %}\n{% if %}\n")
    result = run(project, "check")
    assert result.exit_code == 1
    assert "space_completed.j2" in result.output
    assert "line 2" in result.output or ":2" in result.output


def test_render_names_template_line_and_undefined_variable(project: Path) -> None:
    (project / "templates" / "space_completed.j2").write_text(
        "{% block title %}done{% endblock %}\n{% block body %}\n{{ data.user.nmae }}\n{% endblock %}\n"
    )
    event = project / "space.json"
    event.write_text(
        json.dumps(event_object("space.completed", None, {"user": {"name": "Ada"}, "space": {"name": "S"}}))
    )
    result = run(project, "render", "--rule", "space-completed", "--event", str(event))
    assert result.exit_code == 2
    assert "space_completed.j2" in result.output
    assert "line 3" in result.output
    assert "nmae" in result.output


def test_event_file_that_is_not_json_exits_2_with_place(project: Path) -> None:
    bad = project / "bad.json"
    bad.write_text('{"type": "planet.completed",\n  "data": }')
    for args in (("test", str(bad)), ("render", "--rule", "planet-completed", "--event", str(bad))):
        result = run(project, *args)
        assert result.exit_code == 2
        assert f"{bad}:2:" in result.output
        assert "not valid JSON" in result.output


def test_commands_other_than_check_exit_2_on_a_bad_config(project: Path) -> None:
    (project / "rules.yaml").write_text("version: 1\nrules: 5\n")
    result = run(project, "test", str(project / "examples" / "planet_completed.json"))
    assert result.exit_code == 2
    assert "rules" in result.output


def test_test_shows_matched_rules_and_explains_the_others(project: Path) -> None:
    result = run(project, "test", str(project / "examples" / "planet_completed.json"), "--explain")
    assert result.exit_code == 0
    assert "planet-completed -> console, discord-general" in result.output
    assert "space-completed: type 'planet.completed' matches none of" in result.output


def test_test_explain_names_the_failing_condition(project: Path) -> None:
    easy = project / "easy.json"
    easy.write_text(
        json.dumps(
            event_object("planet.completed", None, {"user": {"id": 1, "name": "B"}, "planet": {"difficulty": 1}})
        )
    )
    result = run(project, "test", str(easy), "--explain")
    assert "no rule matched" in result.output
    assert "data.planet.difficulty" in result.output


def test_test_json_output(project: Path) -> None:
    result = run(project, "test", str(project / "examples" / "user_signed_up.json"), "--json")
    payload = json.loads(result.output)
    assert payload["rules"] == ["premium-signup"]
    assert payload["channels"] == ["console", "slack-growth"]
    stopped = next(v for v in payload["verdicts"] if v["rule"] == "signup")
    assert stopped["fired"] is False


def test_cases_pass_on_the_shipped_example(project: Path) -> None:
    result = run(project, "test", "--cases", str(project / "examples" / "cases.yaml"))
    assert result.exit_code == 0, result.output
    assert "4 passed, 0 failed" in result.output


def test_cases_mismatch_exits_1_and_says_what_differs(project: Path) -> None:
    cases = project / "cases.yaml"
    cases.write_text(
        "- name: wrong\n  event: examples/planet_completed.json\n  expect: {rules: [signup]}\n"
        "- name: right\n  event: examples/planet_completed.json\n  expect: {rules: [planet-completed]}\n"
    )
    result = run(project, "test", "--cases", str(cases))
    assert result.exit_code == 1
    assert "FAIL wrong: expected rules ['signup'], got ['planet-completed']" in result.output
    assert "PASS right" in result.output


def test_cases_see_events_refused_by_their_schema_fire_nothing(project: Path) -> None:
    text = (project / "rules.yaml").read_text()
    (project / "rules.yaml").write_text(
        text.replace(
            "rules:\n",
            "events:\n  planet.completed:\n    user: {id: integer, name: string}\n    planet: any\n    score?: any\nrules:\n",
            1,
        )
    )
    cases = project / "cases.yaml"
    cases.write_text(
        "- name: refused\n  event: {type: planet.completed, data: {user: {id: x}}}\n  expect: {rules: []}\n"
        "- name: wrongly expected\n  event: {type: planet.completed, data: {user: {id: x}}}\n"
        "  expect: {rules: [planet-completed]}\n"
    )
    result = run(project, "test", "--cases", str(cases))
    assert result.exit_code == 1
    assert "PASS refused" in result.output
    assert "FAIL wrongly expected: expected rules ['planet-completed'], got none: the event fails its schema" in (
        result.output
    )
    assert "data.user.id" in result.output


def test_render_rule_prints_each_channel_as_it_receives_it(project: Path) -> None:
    result = run(
        project,
        "render",
        "--rule",
        "planet-completed",
        "--event",
        str(project / "examples" / "planet_completed.json"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    rendered = json.loads(result.output)
    assert [r["channel"] for r in rendered] == ["console", "discord-general"]
    assert rendered[0]["title"] == "Ada completed Kepler-22b"
    assert rendered[1]["title"].startswith(":ringed_planet:")  # the discord override
    assert "12,345" in rendered[0]["body"]


def test_render_template_for_one_channel(project: Path) -> None:
    result = run(
        project,
        "render",
        "user_signed_up",
        "--event",
        str(project / "examples" / "user_signed_up.json"),
        "--channel",
        "slack-growth",
    )
    assert result.exit_code == 0, result.output
    assert ":tada:" in result.output


def test_render_unknown_rule_suggests(project: Path) -> None:
    result = run(
        project, "render", "--rule", "planet-complete", "--event", str(project / "examples" / "planet_completed.json")
    )
    assert result.exit_code == 2
    assert "did you mean 'planet-completed'?" in result.output


def test_schema_is_json_schema_for_rules_yaml() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "rules" in schema["properties"]


def test_plugins_lists_builtins_with_what_they_register() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    plugins = json.loads(result.output)
    builtins = next(p for p in plugins if p["source"] == "built-in")
    assert {"discord", "slack", "email", "apprise", "webhook", "console"} <= set(builtins["channels"])
    assert "notify" in builtins["jobs"]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["check"],
        ["test"],
        ["render"],
        ["schema"],
        ["plugins"],
        ["serve"],
        ["publish"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "replay"],
        ["dlq", "purge"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_console_script_runs_check(project: Path) -> None:
    router = Path(sys.executable).parent / "router"
    completed = subprocess.run(
        [str(router), "check"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "OK" in completed.stdout


def test_render_previews_a_digest_rule_as_a_batch_of_one(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "d.j2").write_text(
        "{% block title %}{{ count }} planets{% endblock %}{% for e in events %}- {{ e.data.user }}\n{% endfor %}"
    )
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nchannels: {console: {type: console}}\nrules:\n"
        "  - {name: d, on: '**', template: d, channels: [console], digest: {window: 5m}}\n"
    )
    (tmp_path / "e.json").write_text(json.dumps(event_object("planet.completed", None, {"user": "ada"})))
    result = run(tmp_path, "render", "--rule", "d", "--event", str(tmp_path / "e.json"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"channel": "console", "title": "1 planets", "body": "- ada"}]
