"""Rendering notifications from a templates folder: blocks, overrides, errors, limits, context."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import pass_context

from router.config.models import Rule
from router.core.errors import TemplateError
from router.core.events import Event
from router.templating.filters import BUILTIN_FILTERS
from router.templating.templates import Rendered, Templates, build_context
from tests import builders

DATA = {
    "user": {"id": 7, "name": "Ann"},
    "planet": {"id": 42, "name": "Mars", "difficulty": 3},
    "items": ["rock", "ice"],
}

PLANET = """\
{% block title %}{{ data.user.name }} completed {{ data.planet.name }}{% endblock %}
{% block body %}
Difficulty: {{ data.planet.difficulty }}
Event: {{ event.type }} / {{ event["id"] }}
{% endblock %}
"""


def make_event(data: dict[str, Any] | None = None, **fields: Any) -> Event:
    return builders.make_event(DATA if data is None else data, **fields)


@pytest.fixture
def folder(tmp_path: Path) -> Callable[..., Templates]:
    """Write ``name -> source`` files into a fresh folder and build Templates over it."""

    def build(filters: dict[str, Callable[..., Any]] | None = BUILTIN_FILTERS, **files: str) -> Templates:
        for name, source in files.items():
            path = tmp_path / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        return Templates(tmp_path, filters)

    return build


def ctx(**extra: Any) -> dict[str, Any]:
    return {**build_context(make_event()), **extra}


def render_error(templates: Templates, name: str, context: dict[str, Any], **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        templates.render(name, context, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return caught.value


# -- blocks and files -----------------------------------------------------------------------


def test_title_and_body_blocks_are_rendered_and_stripped(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"planet_completed.j2": PLANET})
    assert templates.render("planet_completed", ctx()) == Rendered(
        title="Ann completed Mars", body="Difficulty: 3\nEvent: planet.completed / evt-1"
    )


def test_a_file_without_blocks_is_all_body(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "plain.j2": "\n  Hello {{ data.user.name }}!\n{% if data.items %}\nitems: {{ data.items | join(', ') }}\n{% endif %}\n"
        }
    )
    assert templates.render("plain", ctx()) == Rendered(title="", body="Hello Ann!\nitems: rock, ice")


def test_text_outside_a_title_block_is_the_body(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{"t.j2": "{% block title %}Hi {{ data.user.name }}{% endblock %}\nWelcome to {{ data.planet.name }}."}
    )
    assert templates.render("t", ctx()) == Rendered(title="Hi Ann", body="Welcome to Mars.")


def test_channel_override_extends_and_replaces_only_the_title(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "planet_completed.j2": PLANET,
            "planet_completed.discord.j2": '{% extends "planet_completed.j2" %}\n{% block title %}**{{ super() }}**{% endblock %}\n',
        }
    )
    discord = templates.render("planet_completed", ctx(), channel_type="discord")
    slack = templates.render("planet_completed", ctx(), channel_type="slack")
    assert discord.title == "**Ann completed Mars**"
    assert discord.body == slack.body == "Difficulty: 3\nEvent: planet.completed / evt-1"
    assert slack.title == "Ann completed Mars"


def test_channel_override_replacing_only_the_body(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "p.j2": PLANET,
            "p.email.j2": '{% extends "p.j2" %}{% block body %}Dear {{ data.user.name }},\n{{ super() }}{% endblock %}',
        }
    )
    rendered = templates.render("p", ctx(), channel_type="email")
    assert rendered.title == "Ann completed Mars"
    assert rendered.body == "Dear Ann,\nDifficulty: 3\nEvent: planet.completed / evt-1"


def test_standalone_override_without_base_file(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"only.slack.j2": "{% block title %}S{% endblock %}{% block body %}slack only{% endblock %}"})
    assert templates.render("only", ctx(), channel_type="slack") == Rendered("S", "slack only")
    assert templates.exists("only", "slack") and not templates.exists("only")
    with pytest.raises(TemplateError, match=r"only\.j2"):
        templates.render("only", ctx(), channel_type="discord")


def test_top_level_imports_and_macros_work_inside_blocks(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "_macros.j2": "{% macro badge(n) %}[{{ n }}]{% endmacro %}",
            "m.j2": '{% import "_macros.j2" as ui %}\n{% set greeting = "Hi" %}\n'
            "{% block title %}{{ greeting }} {{ ui.badge(data.user.name) }}{% endblock %}\n"
            "{% block body %}{{ ui.badge(data.planet.name) }} / {{ self.title() }}{% endblock %}\n",
        }
    )
    assert templates.render("m", ctx()) == Rendered(title="Hi [Ann]", body="[Mars] / Hi [Ann]")


def test_payload_keys_win_over_dict_methods(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{"k.j2": "{{ data['items'] | length }} {{ data.items | join('+') }} {{ data.get('missing', 'x') }}"}
    )
    assert templates.render("k", ctx()).body == "2 rock+ice x"


def test_exists_and_names(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{"a.j2": "a", "a.discord.j2": "ad", "b.slack.j2": "b", "notes.txt": "not a template", "partials__f.j2": "f"}
    )
    assert templates.names() == ["a", "b"]
    assert templates.exists("a") and templates.exists("a", "discord") and templates.exists("a", "slack")
    assert templates.exists("b", "slack") and not templates.exists("b")
    assert not templates.exists("c") and not templates.exists("../a") and not templates.exists("notes")


def test_missing_and_invalid_names_are_clear_errors(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"planet_completed.j2": PLANET})
    error = render_error(templates, "planet_complete", ctx(), channel_type="discord")
    assert error.template == "planet_complete.j2"
    assert "nor planet_complete.discord.j2" in str(error)
    assert "did you mean 'planet_completed'?" in str(error)
    with pytest.raises(TemplateError, match="invalid template name"):
        templates.render("../etc/passwd", ctx())


def test_missing_folder_is_reported_on_render_not_on_build(tmp_path: Path) -> None:
    templates = Templates(tmp_path / "nowhere", BUILTIN_FILTERS)
    assert templates.names() == [] and templates.compile_all() == []
    with pytest.raises(TemplateError, match="does not exist"):
        templates.render("x", ctx())


def test_compiled_once_per_build_and_a_new_build_sees_changes(folder: Callable[..., Templates], tmp_path: Path) -> None:
    templates = folder(**{"t.j2": "v1 {{ data.user.name }}"})
    assert templates.render("t", ctx()).body == "v1 Ann"
    (tmp_path / "t.j2").write_text("v2", encoding="utf-8")
    assert templates.render("t", ctx()).body == "v1 Ann"  # the hot path never re-reads files
    assert Templates(tmp_path, BUILTIN_FILTERS).render("t", ctx()).body == "v2"  # a reload builds anew


# -- errors ---------------------------------------------------------------------------------


def test_undefined_variable_names_template_line_and_variable(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{"welcome.j2": "{% block title %}Hi{% endblock %}\n{% block body %}\nHello\n{{ user.name }}\n{% endblock %}"}
    )
    error = render_error(templates, "welcome", ctx())
    assert (error.template, error.line) == ("welcome.j2", 4)
    assert str(error) == "welcome.j2, line 4: 'user' is undefined"


def test_attribute_typo_names_the_expression_and_suggests(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "planet_completed.j2": "{% block title %}T{% endblock %}\n{% block body %}\n{{ data.plannet.name }}\n{% endblock %}"
        }
    )
    error = render_error(templates, "planet_completed", ctx())
    assert str(error).startswith("planet_completed.j2, line 3: 'data' has no attribute 'plannet'")
    assert "did you mean 'planet'?" in str(error)


def test_nested_attribute_and_loop_variable_errors(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "n.j2": "{{ data.user.nmae }}",
            "loop.j2": "{% for e in events %}\n{{ e.data.user.idd }}\n{% endfor %}",
            "idx.j2": "{{ data['items'][5] }}",
        }
    )
    assert (
        str(render_error(templates, "n", ctx()))
        == "n.j2, line 1: 'data.user' has no attribute 'nmae'; did you mean 'name'?"
    )
    digest = build_context(make_event(), events=[make_event()])
    assert str(render_error(templates, "loop", digest)).startswith(
        "loop.j2, line 2: 'e.data.user' has no attribute 'idd'"
    )
    assert "has no element 5" in str(render_error(templates, "idx", ctx()))


def test_error_in_an_inherited_block_names_the_parent_file(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "p.j2": "{% block title %}ok{% endblock %}\n{% block body %}\n\n{{ data.nope }}{% endblock %}",
            "p.discord.j2": '{% extends "p.j2" %}{% block title %}D{% endblock %}',
        }
    )
    error = render_error(templates, "p", ctx(), channel_type="discord")
    assert (error.template, error.line) == ("p.j2", 4)


def test_syntax_error_names_file_and_line(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"broken.j2": "{% block title %}x{% endblock %}\n{% block body %}\n{% if %}\n{% endblock %}"})
    error = render_error(templates, "broken", ctx())
    assert (error.template, error.line) == ("broken.j2", 3)
    # The failure is remembered: a broken template fails fast on every render, with the same message.
    assert str(render_error(templates, "broken", ctx())) == str(error)


def test_unknown_filter_is_a_compile_error_with_a_suggestion(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"f.j2": "\n{{ data.planet.difficulty | nubmer }}"})
    assert str(render_error(templates, "f", ctx())) == "f.j2, line 2: no filter named 'nubmer'; did you mean 'number'?"


def test_filter_failure_names_filter_template_and_line(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"f.j2": "line one\n{{ data.user.name | number }}"})
    error = render_error(templates, "f", ctx())
    assert str(error) == "f.j2, line 2: filter 'number': expected a number, got 'Ann'"


def test_filter_given_an_undefined_value_reports_the_missing_variable(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"f.j2": "{{ data.user.score | number }}"})
    assert str(render_error(templates, "f", ctx())) == "f.j2, line 1: 'data.user' has no attribute 'score'"


def test_any_exception_while_rendering_is_a_template_error(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"z.j2": "{{ 1 // 0 }}", "inc.j2": '\n{% include "missing.j2" %}'})
    assert (
        str(render_error(templates, "z", ctx()))
        == "z.j2, line 1: ZeroDivisionError: integer division or modulo by zero"
    )
    assert str(render_error(templates, "inc", ctx())) == "inc.j2, line 2: template 'missing.j2' not found"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.__class__ }}",
        "{{ event.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_introspection(folder: Callable[..., Templates], source: str) -> None:
    templates = folder(**{"evil.j2": source})
    error = render_error(templates, "evil", ctx())
    assert error.template == "evil.j2" and error.line == 1
    assert "unsafe" in str(error) or "undefined" in str(error) or "no attribute" in str(error)


def test_templates_cannot_change_the_event(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"m.j2": "{{ data['items'].append('gold') }}{{ data.update(x=1) }}"})
    event = make_event(data={"items": ["rock"]})
    error = render_error(templates, "m", build_context(event))
    assert "blocked by the sandbox" in str(error)
    assert event.data == {"items": ["rock"]}


def test_compile_all_reports_every_broken_file(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{
            "good.j2": PLANET,
            "good.discord.j2": '{% extends "good.j2" %}{% block title %}D{% endblock %}',
            "syntax.j2": "ok\n\n{% for x in %}{% endfor %}",
            "unclosed.j2": "{% block title %}x",
            "orphan.slack.j2": '{% extends "gone.j2" %}',
            "inc.j2": 'a\n{% include "partials/missing.j2" %}',
            "partials__bad.j2": "{{ x | nofilter }}",
        }
    )
    errors = templates.compile_all()
    where = sorted((e.template, e.line) for e in errors)
    assert where == [
        ("inc.j2", 2),
        ("orphan.slack.j2", 1),
        ("partials/bad.j2", 1),
        ("syntax.j2", 3),
        ("unclosed.j2", 1),
    ]
    assert all(isinstance(e, TemplateError) for e in errors)
    assert any("'gone.j2' not found" in str(e) for e in errors)


def test_compile_all_on_a_good_folder_is_empty(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"a.j2": PLANET, "a.discord.j2": '{% extends "a.j2" %}{% block title %}x{% endblock %}'})
    assert templates.compile_all() == []


def test_extends_loop_is_an_error(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"a.j2": '{% extends "a.discord.j2" %}', "a.discord.j2": '{% extends "a.j2" %}'})
    assert any("extends loop" in str(e) for e in templates.compile_all())
    with pytest.raises(TemplateError, match="extends loop"):
        templates.render("a", ctx(), channel_type="discord")


# -- limits ---------------------------------------------------------------------------------


def test_title_and_body_are_truncated_to_the_channel_limits(folder: Callable[..., Templates]) -> None:
    templates = folder(
        **{"long.j2": "{% block title %}{{ 'é' * 300 }}{% endblock %}{% block body %}{{ '👩‍💻' * 1000 }}{% endblock %}"}
    )
    rendered = templates.render("long", ctx(), max_title=256, max_body=2000)
    assert len(rendered.title) == 256 and rendered.title.endswith("…")
    assert rendered.title[:-1] == "é" * 255
    assert len(rendered.body) <= 2000 and rendered.body.endswith("👩‍💻…")  # no half emoji before the ellipsis
    untouched = templates.render("long", ctx())
    assert len(untouched.title) == 300


# -- render_string --------------------------------------------------------------------------


def test_render_string_renders_and_compiles_each_source_once(
    folder: Callable[..., Templates], monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = folder()
    compiled: list[str] = []
    original = templates._env.from_string

    def counting(source: str, *args: Any, **kwargs: Any) -> Any:
        compiled.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(templates._env, "from_string", counting)
    key = "{{ data.user.id }}:{{ data.planet.id }}"
    for _ in range(50):
        assert templates.render_string(key, ctx()) == "7:42"
    assert templates.render_string(" {{ data.user.name | upper }} ", ctx()) == "ANN"
    assert compiled == [key, " {{ data.user.name | upper }} "]


def test_render_string_errors_quote_the_source(folder: Callable[..., Templates]) -> None:
    templates = folder()
    with pytest.raises(TemplateError) as caught:
        templates.render_string("{{ data.usr.id }}", ctx())
    assert (
        str(caught.value)
        == "inline template '{{ data.usr.id }}', line 1: 'data' has no attribute 'usr'; did you mean 'user'?"
    )
    with pytest.raises(TemplateError, match=r"inline template '\{\{ data\.user\.id ', line 1"):
        templates.render_string("{{ data.user.id ", ctx())
    with pytest.raises(TemplateError, match="'usr' is undefined; did you mean 'user'"):
        templates.render_string("{{ usr }}", {"user": 1})


# -- filters --------------------------------------------------------------------------------


def test_filters_are_exactly_the_ones_given(folder: Callable[..., Templates], tmp_path: Path) -> None:
    templates = folder(filters=None, **{"n.j2": "{{ 1234 | number }}"})
    assert "no filter named 'number'" in str(render_error(templates, "n", ctx()))
    shout = Templates(tmp_path, {"number": lambda value: f"#{value}"})
    assert shout.render("n", ctx()).body == "#1234"


def test_builtin_filters_work_in_templates(folder: Callable[..., Templates]) -> None:
    source = (
        "{{ event.time | datetime }} | {{ 3900 | duration }} | {{ 12345 | number }} | {{ 3400000 | compact }} | "
        "{{ 0.5 | percent }} | {{ 'abcdef' | truncate_to(4) }} | {{ '*hi*' | escape_markdown(channel.markdown) }} | "
        "{{ count }} {{ count | pluralize('event') }}"
    )
    templates = folder(**{"f.j2": source})
    context = build_context(
        make_event(), channel={"name": "d", "type": "discord", "markdown": "discord"}, events=[make_event()] * 3
    )
    assert templates.render("f", context).body == (
        "2024-05-01 12:00 UTC | 1h 5m | 12,345 | 3.4M | 50% | abc… | \\*hi\\* | 3 events"
    )


def test_plugin_filters_with_pass_context_keep_working(folder: Callable[..., Templates], tmp_path: Path) -> None:
    @pass_context
    def rule_name(context: Any, value: str) -> str:
        return f"{value}@{context['rule']['name']}"

    templates = folder(filters={"at_rule": rule_name}, **{"r.j2": "{{ 'x' | at_rule }}"})
    rule = Rule.model_validate({"name": "planet-completed", "on": "planet.completed", "channels": ["c"]})
    assert templates.render("r", build_context(make_event(), rule=rule)).body == "x@planet-completed"


def test_plugin_filter_crash_is_a_template_error(folder: Callable[..., Templates]) -> None:
    def broken(value: Any) -> str:
        raise KeyError("boom")

    templates = folder(filters={"broken": broken}, **{"b.j2": "\n\n{{ 1 | broken }}"})
    assert str(render_error(templates, "b", ctx())) == "b.j2, line 3: filter 'broken': KeyError: 'boom'"


# -- context --------------------------------------------------------------------------------


def test_build_context_for_one_event() -> None:
    rule = Rule.model_validate(
        {
            "name": "r1",
            "on": ["planet.*"],
            "template": "t",
            "channels": ["discord-general"],
            "with": {"token": "s3cret"},
        }
    )
    event = make_event()
    context = build_context(
        event,
        rule=rule,
        channel={"name": "discord-general", "type": "discord", "url": "https://discord.com/api/webhooks/1/s3cret"},
    )
    assert context["data"] is event.data
    assert context["event"].type == context["event"]["type"] == "planet.completed"
    assert context["event"].time == event.time
    assert context["rule"] == {
        "name": "r1",
        "on": ["planet.*"],
        "template": "t",
        "job": "notify",
        "channels": ["discord-general"],
    }
    assert context["channel"] == {"name": "discord-general", "type": "discord"}  # options (secrets) are left out
    assert "s3cret" not in repr(context)
    assert "events" not in context and "count" not in context
    assert build_context(event)["channel"] == {} and build_context(event)["rule"] == {}
    with pytest.raises(AttributeError):
        _ = context["event"].nope


def test_digest_context_has_events_and_count(folder: Callable[..., Templates]) -> None:
    batch = [make_event({"user": {"name": name}}, id=f"e{i}") for i, name in enumerate(["Ann", "Bob", "Cy"])]
    templates = folder(
        **{
            "digest.j2": "{% block title %}{{ count }} {{ count | pluralize('signup') }}{% endblock %}\n"
            "{% block body %}\n{% for e in events %}\n- {{ e.data.user.name }} ({{ e.id }})\n{% endfor %}\n{% endblock %}"
        }
    )
    rendered = templates.render("digest", build_context(batch[-1], events=batch))
    assert rendered == Rendered(title="3 signups", body="- Ann (e0)\n- Bob (e1)\n- Cy (e2)")


def test_now_is_the_time_of_rendering_in_utc(folder: Callable[..., Templates]) -> None:
    templates = folder(**{"t.j2": "{{ now.isoformat() }}|{{ event.time.isoformat() }}"})
    before = datetime.now(UTC)
    rendered = templates.render("t", build_context(make_event()))
    after = datetime.now(UTC)
    now, event_time = rendered.body.split("|")
    assert before <= datetime.fromisoformat(now) <= after
    assert datetime.fromisoformat(now).utcoffset() is not None
    assert now != event_time  # not the event's time
