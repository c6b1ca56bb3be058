"""Properties of config loading: any text, any structure -> a LoadedConfig or a located ConfigError.

``router check``, ``router serve`` and reloads all go through :func:`load_config`; anything but
ConfigError escaping it would be a traceback instead of a list of problems (and, on reload,
a crashed reload task). Values from the environment must never appear in the problems.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import LoadedConfig, load_config, load_config_text
from router.config.envsubst import SubstitutionError, expand
from router.config.yamlsource import parse_yaml
from router.core.errors import ConfigError
from tests.test_config_loader import DATA, plugins

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGISTRY = plugins.make_registry()
SECRET = "zq7-SECRET-webhook-token"
ENV = {
    "DISCORD_WEBHOOK_URL": f"https://discord.com/api/webhooks/123456/{SECRET}",
    "ROUTER_BROKER_URL": "",
    "PASSWORD": SECRET,
}
BASE: dict[str, Any] = parse_yaml((DATA / "design_rules.yaml").read_text()).data  # `on:` stays a key


def _load(text: str) -> LoadedConfig | ConfigError:
    try:
        return load_config_text(text, REGISTRY, filename="rules.yaml", base_dir=DATA, env=ENV)
    except ConfigError as error:
        return error


def _assert_reported(error: ConfigError, text: str) -> None:
    """Every problem says where (this file, a line within it or a key path) and what, without secrets."""
    assert error.problems
    lines = text.count("\n") + 2
    for problem in error.problems:
        assert problem.file == "rules.yaml"
        assert problem.message
        assert problem.line is None or 1 <= problem.line <= lines, problem
        assert problem.column is None or problem.column >= 1
    shown = str(error)
    assert SECRET not in shown and "SECRET" not in shown, shown


def test_the_base_config_loads() -> None:
    # The mutations below start from a config that is valid: otherwise every one would fail.
    assert isinstance(_load(yaml.safe_dump(BASE)), LoadedConfig)


# -- arbitrary text --------------------------------------------------------------------------

FRAGMENTS = [
    "rules:", "channels:", "version: 1", "\n", "  ", "- ", "{", "}", "[", "]", ": ", ",", "&a ", "*a", "<<: *a",
    "!!python/object:os.system", "!!binary", "!!int x", "? ", "---", "...", "#", '"', "'", "${PASSWORD}", "${",
    "$${", "${NO_SUCH}", "name: r", "on: '**'", "when:", "data.x: {regex: '('}", "\t", "\x00", "\ufeff", "%YAML 1.1",
    "%TAG ! tag:x,2000:", "|", ">", "~", "null", "1e999", ".nan", "0x1F", "2024-05-01",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=60), yamlish))
def test_any_text_loads_or_is_a_located_config_error(text: str) -> None:
    result = _load(text)
    if isinstance(result, ConfigError):
        _assert_reported(result, text)


@SETTINGS
@given(st.binary(max_size=80))
def test_any_file_loads_or_is_a_located_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_bytes(raw)
        try:
            load_config(path, REGISTRY, env=ENV)
        except ConfigError as error:
            assert error.problems and all(p.message and p.file == str(path) for p in error.problems)


# -- arbitrary structures ----------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**40),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["${PASSWORD}", "${NO_SUCH}", "${", "**", "a.*", "1s", "-1s", "10m", "(", "{{ x", "notify"]),
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += _paths(value, (*prefix, i))
    return found


ALL_PATHS = _paths(BASE)


def _mutate(tree: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    head, rest = path[0], path[1:]
    if rest:
        copy[head] = _mutate(copy[head], rest, action, value)
    elif action == "delete":
        del copy[head]
    elif action == "add" and isinstance(copy, dict):
        copy[f"{head}_extra"] = value
    else:
        copy[head] = value
    return copy


mutations = st.lists(
    st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["replace", "replace", "delete", "add"]), trees),
    min_size=1,
    max_size=3,
)


@SETTINGS
@given(mutations)
def test_any_structure_loads_or_is_a_located_config_error(changes: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    tree: Any = BASE
    for path, action, value in changes:
        try:
            tree = _mutate(tree, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this path
    text = yaml.safe_dump(tree, allow_unicode=True)
    result = _load(text)
    if isinstance(result, ConfigError):
        _assert_reported(result, text)
        if isinstance(tree, dict) and tree:  # else the whole file is the place
            assert all(p.path or p.line is not None for p in result.problems), "a problem with no place"


# -- expansion bombs and depth ---------------------------------------------------------------------


def _bomb(line: Any) -> str:
    lines = ['a0: &a0 {k: "x"}']
    lines += [line(i) for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_alias_and_merge_bombs_are_refused_quickly() -> None:
    bombs = {
        "aliases": _bomb(lambda i: f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"),
        # No value is built: the merges of merges alone would be 10**9 steps.
        "merges": _bomb(lambda i: f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}"),
    }
    for name, text in bombs.items():
        started = time.monotonic()
        result = _load(text)
        elapsed = time.monotonic() - started
        assert isinstance(result, ConfigError), name
        [problem] = result.problems
        assert "expands to more than 1,000,000 values" in problem.message, (name, problem)
        assert problem.line is not None and problem.line > 1, "points at the anchor that expands too far"
        # Sized before anything is built: refused at once, not after building a million values.
        assert elapsed < 5, f"{name} took {elapsed:.1f}s"


def test_deep_nesting_is_a_located_config_error_at_once() -> None:
    # libyaml stops at 1,000 levels; parsing again with the Python parser (for its messages)
    # took seconds to reach the recursion limit on a 5 kB file.
    texts = {
        "flow": "[" * 50_000,
        "closed flow": "a: " + "[" * 2000 + "]" * 2000,
        "block": "a:\n" + "".join(f"{' ' * i}b:\n" for i in range(1, 2000)),
    }
    for name, text in texts.items():
        started = time.monotonic()
        result = _load(text)
        elapsed = time.monotonic() - started
        assert isinstance(result, ConfigError), name
        _assert_reported(result, text)
        [problem] = result.problems
        assert "nesting depth" in problem.message and problem.line is not None, (name, problem)
        assert elapsed < 2, f"{name} took {elapsed:.1f}s"
    # Below libyaml's limit, the document parses and nesting past 64 levels is one located problem.
    result = _load("a: " + "[" * 200 + "]" * 200)
    assert isinstance(result, ConfigError)
    assert any("nested more than 64 levels deep" in p.message and p.line == 1 for p in result.problems)


# -- ${VAR} expansion --------------------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.sampled_from(["$", "{", "}", "${", "$${", ":-", "A", "PASSWORD", "_", "1", "x", " "]), max_size=12).map(
        "".join
    )
)
def test_expansion_returns_text_or_a_substitution_error_without_the_value(text: str) -> None:
    try:
        expand(text, ENV, set())
    except SubstitutionError as error:
        assert SECRET not in str(error)
