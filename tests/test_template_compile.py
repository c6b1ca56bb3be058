"""Templates compiled in forked worker processes (router.templating.compile_workers) load exactly as in-process.

A cold load of many templates shares the parsing and compiling with forked workers, started
before rules.yaml is read: the errors (file:line, message, suggestions), the rendered output and
the cache it writes must be what a load in one process gives, and no worker may outlive it.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import nodes
from jinja2.visitor import NodeTransformer

from router.core.errors import ConfigError
from router.runtime.runtime import _start_templates_early, build_runtime
from router.templating import compile_workers as template_compile
from router.templating import templates as templates_module
from router.templating.compile_workers import SharedMap, map_shared
from router.templating.compiled import Facts
from router.templating.filters import BUILTIN_FILTERS
from router.templating.limits import CONCAT_FILTER, ITER_FILTER, LimitTransformer
from router.templating.templates import Templates, build_context
from tests.test_config_loader import plugins
from tests.test_templates import make_event

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")

GOOD = (
    "{{% block title %}}[{k}] {{{{ data.user.name }}}}{{% endblock %}}\n"
    "{{% block body %}}{{% for x in [1, 2] %}}{{{{ x ~ '{k}' }}}}{{% endfor %}} {{{{ data.planet.name | upper }}}}"
    "{{% endblock %}}\n"
)
BROKEN = {
    "syntax.j2": "ok\n\n{% for x in %}{% endfor %}",
    "filter.j2": "line one\n{{ data.user.name | uper }}",
    "twice.j2": "{% block title %}a{% endblock %}\n\n{% block title %}b{% endblock %}",
    "include.j2": 'a\n{% include "partials/missing.j2" %}',
    "orphan.slack.j2": '{% extends "gone.j2" %}',
    "tpl3.discord.j2": '{% extends "tpl3.j2" %}{% block title %}D {{ data.user.name }}{% endblock %}',
}


def write_folder(folder: Path, count: int, broken: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        (folder / f"tpl{k}.j2").write_text(GOOD.format(k=k))
    for name, source in (BROKEN if broken else {}).items():
        (folder / name).write_text(source)
    return folder


def outcome(templates: Templates, processes: int | None) -> list[tuple[str | None, int | None, str]]:
    return [(e.template, e.line, e.reason) for e in templates.compile_all(processes=processes)]


@pytest.fixture
def no_children(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pids of the workers the test forked; fails it if one is left behind (running or unreaped)."""
    pids: list[int] = []
    start = template_compile._Child.start

    def recording(work: Callable[[], Any]) -> template_compile._Child:
        child = start(work)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(template_compile._Child, "start", recording)
    yield pids
    for pid in pids:
        with pytest.raises(ChildProcessError):  # reaped already: not ours to wait for any more
            os.waitpid(pid, os.WNOHANG)


def test_map_shared_gives_each_result_in_order_and_none_where_it_raised(no_children: list[int]) -> None:
    def square(n: int) -> int:
        if n % 7 == 3:
            raise ValueError(n)
        return n * n

    items = list(range(300))
    expected = [None if n % 7 == 3 else n * n for n in items]
    assert map_shared(square, items, processes=3) == expected
    assert len(no_children) == 2
    assert map_shared(square, items, processes=1) == expected


def test_workers_start_only_when_worth_it() -> None:
    assert SharedMap(str, list(range(10))).children == 0  # a fork costs more than ten items
    big = SharedMap(str, list(range(1000)), processes=2)
    try:
        assert big.children == 1
    finally:
        big.close()


def test_a_worker_that_dies_leaves_its_items_undone(no_children: list[int]) -> None:
    parent = os.getpid()

    def work(n: int) -> int:
        if os.getpid() != parent:
            os._exit(3)
        return n

    results = map_shared(work, list(range(200)), processes=2)
    assert all(value in (None, n) for n, value in enumerate(results))


def test_no_worker_with_another_thread_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread may hold a lock a forked child would wait for forever: such a process compiles alone."""
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert SharedMap(str, list(range(1000)), processes=2).children == 0


def test_parallel_compile_reports_the_same_errors_and_renders_the_same(tmp_path: Path, no_children: list[int]) -> None:
    folder = write_folder(tmp_path / "templates", 120)
    (folder / "partials").mkdir()
    alone, shared = Templates(folder, BUILTIN_FILTERS), Templates(folder, BUILTIN_FILTERS)
    expected = outcome(alone, processes=1)
    shared.start_compiling(processes=2)
    assert shared.compiling_processes == 1
    assert outcome(shared, processes=None) == expected
    assert sorted((file, line) for file, line, _ in expected) == [
        ("filter.j2", 2),
        ("include.j2", 2),
        ("orphan.slack.j2", 1),
        ("syntax.j2", 3),
        ("twice.j2", 3),
    ]
    assert any("no filter named 'uper'; did you mean 'upper'?" in reason for _, _, reason in expected)
    context = build_context(make_event())
    for name, channel in [("tpl0", None), ("tpl77", None), ("tpl3", "discord"), ("tpl119", "discord")]:
        assert shared.render(name, context, channel_type=channel) == alone.render(name, context, channel_type=channel)
    assert shared.render("tpl3", context, channel_type="discord").title == "D Ann"
    assert shared.render("tpl7", context).body == "1727 MARS"


def test_templates_a_worker_failed_on_are_compiled_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_children: list[int]
) -> None:
    folder = write_folder(tmp_path / "templates", 150, broken=False)
    parent, prepare = os.getpid(), templates_module.prepare

    def dying(env: Any, item: tuple[str, str, str | None]) -> Any:
        if os.getpid() != parent:
            os._exit(1)
        return prepare(env, item)

    monkeypatch.setattr(templates_module, "prepare", dying)
    templates = Templates(folder, BUILTIN_FILTERS)
    assert templates.compile_all(processes=2) == []
    assert templates.render("tpl149", build_context(make_event())).title == "[149] Ann"


def test_parallel_compile_writes_the_cache_a_warm_load_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_children: list[int]
) -> None:
    folder, cache = write_folder(tmp_path / "templates", 120, broken=False), tmp_path / "cache"
    cold = Templates(folder, BUILTIN_FILTERS, cache_dir=cache)
    assert cold.compile_all(processes=2) == []
    monkeypatch.setattr(templates_module, "prepare", lambda env, item: pytest.fail(f"{item[0]} compiled again"))
    warm = Templates(folder, BUILTIN_FILTERS, cache_dir=cache)
    assert warm.compile_all() == []
    context = build_context(make_event())
    assert warm.render("tpl42", context) == cold.render("tpl42", context)


def test_stopping_early_kills_and_reaps_the_workers(tmp_path: Path, no_children: list[int]) -> None:
    templates = Templates(write_folder(tmp_path / "templates", 300, broken=False), BUILTIN_FILTERS)
    templates.start_compiling(processes=2)
    assert templates.compiling_processes == 1
    templates.stop_compiling()
    assert templates.compiling_processes == 0


def test_dropping_templates_that_compile_stops_the_workers(tmp_path: Path, no_children: list[int]) -> None:
    templates = Templates(write_folder(tmp_path / "templates", 300, broken=False), BUILTIN_FILTERS)
    templates.start_compiling(processes=2)
    assert templates.compiling_processes == 1
    del templates  # no reference cycle holds the workers' pipes open until a collection


# ----------------------------------------------------------------------------- build_runtime

RULES = """\
version: 1
channels:
  ops: {type: slack, url: "https://hooks.example/ops"}
%s
rules:
  - name: first
    on: planet.completed
    template: tpl1
    channels: [ops]
"""


@pytest.fixture
def shared_maps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many workers each SharedMap made started."""
    made: list[int] = []
    init = SharedMap.__init__

    def recording(self: SharedMap, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self.children)

    monkeypatch.setattr(SharedMap, "__init__", recording)
    return made


def problems(path: Path) -> list[tuple[str | None, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        build_runtime(path, plugins.make_registry())
    return [(p.file, p.line, p.message) for p in caught.value.problems]


def test_a_cold_load_compiles_in_workers_started_before_rules_yaml_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_maps: list[int], no_children: list[int]
) -> None:
    monkeypatch.setattr(template_compile, "available_cpus", lambda: 2)
    monkeypatch.setenv("ROUTER_CACHE", "off")
    write_folder(tmp_path / "templates", 120)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES % "")
    with_workers = problems(path)
    assert shared_maps == [1]  # the early start, used by the load
    monkeypatch.setattr(template_compile, "fork_is_safe", lambda: False)
    assert problems(path) == with_workers
    assert shared_maps == [1, 0]
    for name in BROKEN:
        if name != "tpl3.discord.j2":
            (tmp_path / "templates" / name).unlink()
    monkeypatch.undo()
    runtime = build_runtime(path, plugins.make_registry())
    assert runtime.templates.render("tpl3", build_context(make_event()), channel_type="discord").title == "D Ann"


def test_a_wrong_guess_of_the_templates_folder_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_children: list[int]
) -> None:
    monkeypatch.setattr(template_compile, "available_cpus", lambda: 2)
    monkeypatch.setenv("ROUTER_CACHE", "off")
    monkeypatch.setenv("TEMPLATES_DIR", "real")
    write_folder(tmp_path / "templates", 120)  # what the guess finds
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "tpl1.j2").write_text("{% block title %}real{% endblock %}")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES % "templates: ${TEMPLATES_DIR}")
    early = _start_templates_early(path, plugins.make_registry())
    assert early is not None and early.folder == tmp_path / "templates"
    early.stop_compiling()
    runtime = build_runtime(path, plugins.make_registry())
    assert runtime.templates.folder == tmp_path / "real"
    assert runtime.templates.render("tpl1", build_context(make_event())).title == "real"


@pytest.mark.parametrize(
    ("line", "folder"),
    [
        ("", "templates"),
        ("templates: tpl", "tpl"),
        ("templates: 'tpl'  # quoted", "tpl"),
        ('templates: "sub/tpl"', "sub/tpl"),
        ("templates: ${X}", "templates"),
    ],
)
def test_the_templates_folder_guess(tmp_path: Path, line: str, folder: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES % line)
    early = _start_templates_early(path, plugins.make_registry())
    if not template_compile.fork_is_safe() or template_compile.available_cpus() < 2:
        assert early is None
        return
    assert early is not None and early.folder == tmp_path / folder
    early.stop_compiling()


def test_a_config_error_stops_the_early_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_maps: list[int], no_children: list[int]
) -> None:
    monkeypatch.setattr(template_compile, "available_cpus", lambda: 2)
    monkeypatch.setenv("ROUTER_CACHE", "off")
    write_folder(tmp_path / "templates", 300, broken=False)
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(RULES % "").replace("[ops]", "[opps]"))
    assert [(file, line) for file, line, _ in problems(path)] == [(str(path), 9)]
    assert shared_maps == [1]  # started early, then stopped and reaped (no_children)


# ----------------------------------------------------------------------------- the tree walks

COMPLEX = """\
{% extends "base.j2" %}{% import "macros.j2" as m %}{% from "x.j2" import y %}
{% block title %}{{ a ~ b ~ (c ~ "x") }}{% include "inc.j2" %}{% endblock %}
{% block body %}{% for x in data.items if x %}{{ x ~ loop.index }}{% for y in x %}{{ y }}{% endfor %}
{% else %}none{% endfor %}{% block inner %}{{ [1, 2] | join(a ~ b) }}{% endblock %}
{% macro mm(v) %}{{ v ~ caller() }}{% endmacro %}{% call mm(1) %}{% for z in q %}{{ z }}{% endfor %}{% endcall %}
{% endblock %}{% extends other %}
"""


class _Reference(NodeTransformer):
    """The limits' rewriting as Jinja's own transformer does it (what LimitTransformer replaced)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, ITER_FILTER, [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.Tuple(list(node.nodes), "load", lineno=node.lineno)
        return nodes.Filter(items, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


def test_the_limits_rewriting_is_what_jinjas_transformer_makes(tmp_path: Path) -> None:
    env = Templates(tmp_path, BUILTIN_FILTERS)._env
    ours, reference = env.parse(COMPLEX), env.parse(COMPLEX)
    assert LimitTransformer().visit(ours) == _Reference().visit(reference)
    assert len(list(ours.find_all(nodes.Filter))) == len(list(env.parse(COMPLEX).find_all(nodes.Filter))) + 8


def test_the_facts_are_what_find_all_finds(tmp_path: Path) -> None:
    tree = Templates(tmp_path, BUILTIN_FILTERS)._env.parse(COMPLEX)
    facts = Facts.of(tree)
    kinds = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
    targets = [(getattr(n, "template"), n.lineno) for n in tree.find_all(kinds)]  # noqa: B009
    assert facts.references == tuple((t.value, line) for t, line in targets if isinstance(t, nodes.Const))
    assert facts.references == (("base.j2", 1), ("macros.j2", 1), ("x.j2", 1), ("inc.j2", 2))
    assert facts.extends == ("base.j2", 1)
    assert facts.blocks == tuple((b.name, b.lineno) for b in tree.find_all(nodes.Block))
    assert facts.blocks == (("title", 2), ("body", 3), ("inner", 4))


def test_workers_compile_with_the_filters_of_this_process(tmp_path: Path, no_children: list[int]) -> None:
    """Filters are inherited by the fork, so a plugin's filter (even a lambda) works and folds the same."""
    folder = tmp_path / "templates"
    folder.mkdir()
    for k in range(120):
        (folder / f"t{k}.j2").write_text(
            "{% block title %}{{ 'x' | shout }} {{ data.user.name | shout }}{% endblock %}"
        )
    filters: dict[str, Callable[..., Any]] = {**BUILTIN_FILTERS, "shout": lambda value: f"{value}!"}
    templates = Templates(folder, filters)
    assert templates.compile_all(processes=2) == []
    assert templates.render("t99", build_context(make_event())).title == "x! Ann!"
