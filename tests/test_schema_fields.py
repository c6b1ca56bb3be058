"""`router check` reports a template that reads a field its event's schema does not declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from router.cli import cli

EVENTS = """
events:
  planet.completed:
    userName: string
    planetName: string
    tags: [string]
    meta: object
    extra: any
    user?:
      id: string
      avatar: {image: string}
  planet.skipped:
    userName: string
  open.thing:
    schema: {type: object, properties: {a: {type: string}}}
  closed.thing:
    schema: {type: object, properties: {name: {type: string}}, additionalProperties: false}
"""


def project(tmp_path: Path, templates: dict[str, str], on: str = "planet.completed", events: str = EVENTS) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, source in templates.items():
        (tmp_path / "templates" / name).write_text(source)
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nchannels:\n  out: {type: console}\n"
        + events
        + f"rules:\n  - {{name: r, on: {on}, template: t, channels: [out]}}\n"
    )
    return tmp_path


def check(root: Path) -> Result:
    result = CliRunner().invoke(cli, ["check", "-c", str(root / "rules.yaml")], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_undeclared_field_is_reported_with_template_line_and_suggestion(tmp_path: Path) -> None:
    root = project(tmp_path, {"t.j2": "{% block title %}{{ data.userName }}{% endblock %}\n\n{{ data.planetNmae }}\n"})
    result = check(root)
    assert result.exit_code == 1, result.output
    assert (
        "t.j2:3: reads data.planetNmae, which event 'planet.completed' does not declare (did you mean 'planetName'?)"
        in result.output
    )


def test_declared_fields_pass(tmp_path: Path) -> None:
    source = """\
{% block title %}{{ data.userName }} / {{ event.data.planetName }} / {{ event["data"]["userName"] }}{% endblock %}
{% block body %}
{% if data.user is defined %}{{ data.user.id }} {{ data.user.avatar.image }}{% endif %}
{{ data.get("planetName") }} {{ data["planetName"] | upper }} {{ data.userName.upper() }}
{{ data.meta.anything.at.all }} {{ data.extra.whatever }} {{ data.tags[0] }} {{ data.tags | join(", ") }}
{{ event.type }} {{ event.id }} {% for key, value in data.items() %}{{ key }}{% endfor %}
{% endblock %}
"""
    result = check(project(tmp_path, {"t.j2": source}))
    assert result.exit_code == 0, result.output


def test_loop_variables_and_names_the_template_binds_are_not_followed(tmp_path: Path) -> None:
    source = """\
{% for tag in data.tags %}{{ tag.undeclared }}{% endfor %}
{% set u = data.user %}{{ u.undeclared }}
{% macro show(data) %}{{ data.undeclared }}{% endmacro %}
"""
    result = check(project(tmp_path, {"t.j2": source}))
    assert result.exit_code == 0, result.output


def test_is_defined_and_get_and_nested_reads_are_still_checked(tmp_path: Path) -> None:
    source = """\
{% if data.score is defined %}{{ data.score }}{% endif %}
{{ data.get("userNmae", "") }}
{{ data.user.avatar.imgae }}
{{ event.data.nope }}
"""
    result = check(project(tmp_path, {"t.j2": source}))
    assert result.exit_code == 1
    assert "t.j2:1: reads data.score, which event 'planet.completed' does not declare\n" in result.output
    assert "t.j2:2: reads data.userNmae, which event" in result.output
    assert "t.j2:3: reads data.user.avatar.imgae, which event 'planet.completed' does not declare" in result.output
    assert "(did you mean 'image'?)" in result.output
    assert "t.j2:4: reads data.nope," in result.output
    assert result.output.count("reads data.score") == 1  # one report per read, not per mention


def test_channel_override_and_templates_it_extends_or_includes_are_checked(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "t.j2": "{% block title %}{{ data.titel }}{% endblock %}{% block body %}ok{% endblock %}",
            "t.console.j2": '{% extends "t.j2" %}{% block body %}{% include "part.j2" %}{% endblock %}',
            "part.j2": "{{ data.partial }}",
            "unrelated.j2": "{{ data.notChecked }}",
        },
    )
    result = check(root)
    assert result.exit_code == 1
    assert "t.j2:1: reads data.titel" in result.output
    assert "part.j2:1: reads data.partial" in result.output
    assert "notChecked" not in result.output  # no rule of a declared event renders it


def test_every_event_of_the_rule_must_declare_the_field(tmp_path: Path) -> None:
    root = project(
        tmp_path, {"t.j2": "{{ data.userName }} {{ data.planetName }}"}, on="[planet.completed, planet.skipped]"
    )
    result = check(root)
    assert result.exit_code == 1
    assert "t.j2:1: reads data.planetName, which event 'planet.skipped' does not declare" in result.output
    assert "userName" not in result.output


@pytest.mark.parametrize(
    "on",
    [
        "planet.*",  # a wildcard may match events without a schema
        "[planet.completed, user.signed_up]",  # one of its events has no schema
        "open.thing",  # a JSON Schema that leaves data open
    ],
)
def test_rules_whose_events_may_carry_any_field_are_not_checked(tmp_path: Path, on: str) -> None:
    result = check(project(tmp_path, {"t.j2": "{{ data.anything }}"}, on=on))
    assert result.exit_code == 0, result.output


def test_a_closed_json_schema_is_checked(tmp_path: Path) -> None:
    result = check(project(tmp_path, {"t.j2": "{{ data.name }} {{ data.nmae }}"}, on="closed.thing"))
    assert result.exit_code == 1
    assert (
        "t.j2:1: reads data.nmae, which event 'closed.thing' does not declare (did you mean 'name'?)" in result.output
    )
