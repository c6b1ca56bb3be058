"""The on-disk caches (router.support.disk_cache): compiled templates and parsed rules.yaml.

A cache may only ever save time: a stale entry (source edited, router code changed, a filter
gone) is never used, and errors are reported exactly as without it.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.config import load_config, yamlsource
from router.core.errors import ConfigError
from router.templating import cache as template_cache
from router.templating.filters import BUILTIN_FILTERS
from router.templating.sandbox import Sandbox
from router.templating.templates import Templates, build_context
from tests.test_config_loader import plugins
from tests.test_templates import make_event

BASE = """\
{% block title %}Hello {{ data.user.name }}{% endblock %}
{% block body %}{{ data.user.name | shout }} finished {{ data.planet.name }}{% endblock %}
"""
CHILD = '{% extends "base.j2" %}{% block title %}Child {{ data.user.name }}{% endblock %}\n'

FILTERS: dict[str, Callable[..., Any]] = {**BUILTIN_FILTERS, "shout": lambda value: f"{value}!"}


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many templates were parsed and compiled (Jinja's compile, from a tree or source)."""
    seen = {"parse": 0, "compile": 0}
    parse, compile_ = Sandbox.parse, Sandbox.compile

    def counting_parse(self: Sandbox, *args: Any, **kwargs: Any) -> Any:
        seen["parse"] += 1
        return parse(self, *args, **kwargs)

    def counting_compile(self: Sandbox, *args: Any, **kwargs: Any) -> Any:
        seen["compile"] += 1
        return compile_(self, *args, **kwargs)

    monkeypatch.setattr(Sandbox, "parse", counting_parse)
    monkeypatch.setattr(Sandbox, "compile", counting_compile)
    yield seen


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "base.j2").write_text(BASE)
    (templates / "child.j2").write_text(CHILD)
    return templates


def build(folder: Path, cache: Path | None, filters: dict[str, Callable[..., Any]] = FILTERS) -> Templates:
    templates = Templates(folder, filters, cache_dir=cache)
    assert templates.compile_all() == []
    return templates


def rendered(templates: Templates, name: str) -> tuple[str, str]:
    result = templates.render(name, build_context(make_event()))
    return result.title, result.body


def test_a_second_load_neither_parses_nor_compiles_and_renders_the_same(
    folder: Path, tmp_path: Path, counts: dict[str, int]
) -> None:
    cache = tmp_path / "cache"
    first = build(folder, cache)
    assert counts == {"parse": 2, "compile": 2}
    expected = rendered(first, "child")
    assert expected == ("Child Ann", "Ann! finished Mars")
    counts.update(parse=0, compile=0)
    second = build(folder, cache)
    assert rendered(second, "child") == expected
    assert rendered(second, "base") == ("Hello Ann", "Ann! finished Mars")
    assert counts == {"parse": 0, "compile": 0}


def test_a_stale_tag_recompiles(
    folder: Path, tmp_path: Path, counts: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries compiled by another version of the router's template code (the limits' rewriting) are not used."""
    cache = tmp_path / "cache"
    build(folder, cache)
    counts.update(parse=0, compile=0)
    monkeypatch.setattr(template_cache, "code_tag", lambda: "templates.py or template_limits.py changed")
    again = build(folder, cache)
    assert counts == {"parse": 2, "compile": 2}
    assert rendered(again, "child") == ("Child Ann", "Ann! finished Mars")


def test_the_tag_follows_the_code_of_the_rewriting_modules() -> None:
    template_cache.code_tag.cache_clear()
    tag = template_cache.code_tag()
    assert tag == template_cache.code_tag()
    assert set(template_cache._TAGGED_MODULES) >= {"templates.py", "limits.py"}
    for module in template_cache._TAGGED_MODULES:
        assert (Path(template_cache.__file__).parent / module).is_file()


def test_an_edited_template_is_recompiled(folder: Path, tmp_path: Path, counts: dict[str, int]) -> None:
    cache = tmp_path / "cache"
    build(folder, cache)
    (folder / "base.j2").write_text(BASE.replace("Hello", "Bye"))
    counts.update(parse=0, compile=0)
    again = build(folder, cache)
    assert counts == {"parse": 1, "compile": 1}  # only the edited file
    assert rendered(again, "base") == ("Bye Ann", "Ann! finished Mars")
    assert rendered(again, "child") == ("Child Ann", "Ann! finished Mars")


def test_errors_are_reported_as_without_a_cache(folder: Path, tmp_path: Path) -> None:
    """Syntax errors in an edited file, a parent that disappeared, a filter that is gone: all with file:line."""
    cache = tmp_path / "cache"
    build(folder, cache)
    (folder / "base.j2").unlink()
    (folder / "broken.j2").write_text("{% block title %}\n{{ data.user.name }\n{% endblock %}\n")
    with_cache = Templates(folder, FILTERS, cache_dir=cache).compile_all()
    without = Templates(folder, FILTERS).compile_all()
    assert [(e.template, e.line, e.reason) for e in with_cache] == [(e.template, e.line, e.reason) for e in without]
    assert {(e.template, e.line) for e in with_cache} == {("broken.j2", 2), ("child.j2", 1)}
    assert any("'base.j2' not found" in e.reason for e in with_cache)

    (folder / "broken.j2").unlink()
    (folder / "base.j2").write_text(BASE)
    build(folder, cache)
    # The cached entries were compiled with the filter `shout`; without it they must fail to compile.
    errors = Templates(folder, BUILTIN_FILTERS, cache_dir=cache).compile_all()
    assert [(e.template, e.line) for e in errors] == [("base.j2", 2)]
    assert "no filter named 'shout'" in errors[0].reason


def test_a_template_that_is_not_utf8_is_reported_as_without_a_cache(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(folder, cache)
    (folder / "latin.j2").write_bytes("caf\xe9 {{ data }}".encode("latin-1"))
    with_cache = Templates(folder, FILTERS, cache_dir=cache).compile_all()
    without = Templates(folder, FILTERS).compile_all()
    assert [(e.template, e.line, e.reason) for e in with_cache] == [(e.template, e.line, e.reason) for e in without]
    assert [e.template for e in with_cache] == ["latin.j2"]
    assert "not UTF-8" in with_cache[0].reason


def test_a_damaged_cache_is_ignored(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(folder, cache)
    for entry in cache.iterdir():
        entry.write_bytes(b"\x00garbage")
    assert rendered(build(folder, cache), "child") == ("Child Ann", "Ann! finished Mars")


def test_code_marshalled_by_another_python_is_not_used(folder: Path, tmp_path: Path, counts: dict[str, int]) -> None:
    """Code objects are only readable by the Python version that wrote them: the file's header names it."""
    cache = tmp_path / "cache"
    build(folder, cache)
    (bundle,) = cache.glob("templates-*.marshal")
    data = bundle.read_bytes()
    assert data.startswith(template_cache._HEADER)
    bundle.write_bytes(template_cache._HEADER[:-4] + b"\xff\xff\r\n" + data[len(template_cache._HEADER) :])
    counts.update(parse=0, compile=0)
    assert rendered(build(folder, cache), "child") == ("Child Ann", "Ann! finished Mars")
    assert counts == {"parse": 2, "compile": 2}


def test_all_the_templates_of_a_folder_are_cached_in_one_file(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(folder, cache)
    assert [path.name.split("-")[0] for path in cache.iterdir()] == ["templates"]
    template_cache.TemplateCache(cache, "").clear()
    assert list(cache.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_cache_others_can_write_to_is_not_used(folder: Path, tmp_path: Path) -> None:
    """Cached code runs outside the sandbox, so a directory others may write to is never read or written."""
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    assert rendered(build(folder, cache), "child") == ("Child Ann", "Ann! finished Mars")
    assert list(cache.iterdir()) == []


# ----------------------------------------------------------------------------- rules.yaml

RULES = """\
version: 1
channels:
  ops: {type: slack, url: "https://hooks.example/ops"}
rules:
  - name: first
    on: planet.completed
    template: planet
    channels: [ops]
  - name: second
    on: space.completed
    template: planet
    channels: [%s]
"""


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    parse = yamlsource._parse

    def counting(text: str, filename: str) -> yamlsource.YamlDocument:
        seen.append(filename)
        return parse(text, filename)

    monkeypatch.setattr(yamlsource, "_parse", counting)
    yield seen


def write_rules(tmp_path: Path, channel: str) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "planet.j2").write_text("{{ data }}")
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(RULES % channel))
    return path


def test_rules_yaml_is_parsed_once_until_it_changes(tmp_path: Path, parses: list[str]) -> None:
    registry = plugins.make_registry()
    path = write_rules(tmp_path, "ops")
    first = load_config(path, registry)
    assert len(parses) == 1
    assert any((tmp_path / ".router" / "cache" / "config").iterdir())
    second = load_config(path, registry)
    assert len(parses) == 1
    assert second.config == first.config
    path.write_text(path.read_text().replace("space.completed", "space.finished"))
    third = load_config(path, registry)
    assert len(parses) == 2
    assert [rule.on for rule in third.config.rules] == [["planet.completed"], ["space.finished"]]


def test_problems_in_a_cached_rules_yaml_are_located(tmp_path: Path, parses: list[str]) -> None:
    registry = plugins.make_registry()
    path = write_rules(tmp_path, "opps")
    with pytest.raises(ConfigError) as cold:
        load_config(path, registry)
    with pytest.raises(ConfigError) as warm:
        load_config(path, registry)
    assert warm.value.problems == cold.value.problems
    (problem,) = warm.value.problems
    assert (problem.line, problem.column, problem.path) == (12, 16, "rules[1].channels[0]")
    assert "unknown channel 'opps'" in problem.message
    assert len(parses) == 2  # the cached text is parsed again only to find the positions


def test_router_cache_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.runtime.runtime import build_runtime

    monkeypatch.setenv("ROUTER_CACHE", "off")
    path = write_rules(tmp_path, "ops")
    runtime = build_runtime(path, plugins.make_registry())
    assert runtime.templates.render("planet", build_context(make_event())).body
    assert not (tmp_path / ".router").exists()


def test_build_runtime_caches_beside_rules_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.runtime.runtime import build_runtime

    monkeypatch.delenv("ROUTER_CACHE", raising=False)
    path = write_rules(tmp_path, "ops")
    build_runtime(path, plugins.make_registry())
    cache = tmp_path / ".router" / "cache"
    assert {entry.name for entry in cache.iterdir()} == {"config", "templates"}
    assert (cache / "templates").stat().st_mode & 0o777 == 0o700
    (tmp_path / "templates" / "planet.j2").write_text("{{ data }")  # broken after it was cached
    with pytest.raises(ConfigError) as caught:
        build_runtime(path, plugins.make_registry())
    assert [(p.file, p.line) for p in caught.value.problems] == [("planet.j2", 1)]
