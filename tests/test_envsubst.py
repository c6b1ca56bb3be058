"""${VAR} substitution: values, defaults, escapes, located errors, and secrets kept out of errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.config import load_config_text
from router.config.envsubst import SubstitutionError, expand, substitute_tree
from router.core.errors import ConfigError
from router.plugins.registry import Registry
from tests import config_plugins as plugins

SECRET = "hunter2-very-secret-token"


@pytest.fixture
def registry() -> Registry:
    return plugins.make_registry()


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),  # as in the shell, empty counts as unset for :-
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-sqlite:///x.db}", {}, "sqlite:///x.db"),
        ("${A}", {"A": ""}, ""),  # set but empty, no default: empty
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost: $5 and $$", {}, "cost: $5 and $$"),
        ("$$${A}", {"A": "x"}, "$${A}"),  # scanned left to right: "$", then the escape "$${"
        ("no references", {}, "no references"),
    ],
)
def test_expand(text: str, env: dict[str, str], expected: str) -> None:
    assert expand(text, env) == expected


def test_substituted_value_is_not_rescanned() -> None:
    assert expand("${A}", {"A": "${B}", "B": "no"}) == "${B}"


def test_unset_variable_names_the_variable() -> None:
    with pytest.raises(SubstitutionError) as caught:
        expand("https://x/${DISCORD_TOKEN}", {})
    assert str(caught.value) == (
        "environment variable DISCORD_TOKEN is not set and has no default (write ${DISCORD_TOKEN:-default} to give one)"
    )


@pytest.mark.parametrize("text", ["${A", "x ${"])
def test_unterminated_reference(text: str) -> None:
    with pytest.raises(SubstitutionError, match=r"unterminated '\$\{'"):
        expand(text, {"A": "x"})


@pytest.mark.parametrize("text", ["${}", "${1A}", "${A B}", "${pass-word}"])
def test_invalid_names_are_not_echoed(text: str) -> None:
    with pytest.raises(SubstitutionError) as caught:
        expand(text, {})
    inner = text[2:-1]
    assert "invalid '${...}' reference" in str(caught.value)
    assert not inner or inner not in str(caught.value)


def test_tree_substitutes_values_not_keys_and_collects_every_error() -> None:
    data = {"${K}": "${K}", "n": 5, "flag": True, "items": ["${MISSING}", "${OTHER}", "${K}"]}
    result = substitute_tree(data, {"K": "value"})

    assert result.data == {"${K}": "value", "n": 5, "flag": True, "items": ["${MISSING}", "${OTHER}", "value"]}
    assert [path for path, _ in result.errors] == [("items", 0), ("items", 1)]
    assert "MISSING" in result.errors[0][1]
    assert result.secrets == {"value"}


# --- through the loader ----------------------------------------------------------------------


def test_missing_variable_is_located_at_the_value(registry: Registry, tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        channels:
          chat:
            type: discord
            url: "https://discord.example/${DISCORD_TOKEN}"
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, registry, filename="rules.yaml", base_dir=tmp_path, env={})
    (problem,) = caught.value.problems
    assert str(problem) == (
        "rules.yaml:4:10: channels.chat.url: environment variable DISCORD_TOKEN is not set and has no default "
        "(write ${DISCORD_TOKEN:-default} to give one)"
    )


def test_every_missing_variable_is_reported(registry: Registry, tmp_path: Path) -> None:
    text = "broker: {url: '${BROKER}'}\nstate: {url: '${STATE}'}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, registry, base_dir=tmp_path, env={})
    assert [p.path for p in caught.value.problems] == ["broker.url", "state.url"]
    assert "BROKER" in caught.value.problems[0].message
    assert "STATE" in caught.value.problems[1].message


def test_defaults_and_escapes_through_the_loader(registry: Registry, tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        broker: {url: "${ROUTER_BROKER_URL:-}", prefetch: "${PREFETCH:-32}", exchange: "$${literal}"}
        state: {url: "${STATE_URL:-sqlite:///s.db}"}
        """
    )
    config = load_config_text(text, registry, base_dir=tmp_path, env={"STATE_URL": "redis://r:6379/0"}).config
    assert config.broker.url == ""
    assert config.broker.prefetch == 32
    assert config.broker.exchange == "${literal}"
    assert config.state.url == "redis://r:6379/0"


def test_secret_values_never_appear_in_errors(registry: Registry, tmp_path: Path) -> None:
    # Every place a substituted value could leak: a wrong type, a plugin validator that
    # echoes its input, a bad duration, a bad regex, an unknown name built from a value.
    text = textwrap.dedent(
        """\
        broker: {prefetch: "${SECRET}"}
        defaults: {retry: {backoff: "${SECRET}"}}
        channels:
          chat: {type: discord, url: "ftp://${SECRET}@example"}
          odd: {type: "${SECRET}"}
        rules:
          - name: r
            on: "x.${SECRET}*"
            when: {data.x: {regex: "(${SECRET}"}}
            template: "${SECRET}"
            channels: ["${SECRET}", chat]
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, registry, filename="rules.yaml", base_dir=tmp_path, env={"SECRET": SECRET})

    problems = caught.value.problems
    assert {p.path for p in problems} >= {
        "broker.prefetch",
        "defaults.retry.backoff",
        "channels.chat.url",
        "channels.odd.type",
        "rules[0].on",
        "rules[0].template",
        "rules[0].channels[0]",
    }
    rendered = str(caught.value)
    assert SECRET not in rendered
    assert "hunter2" not in rendered
    for problem in problems:
        assert SECRET not in problem.message and SECRET not in problem.path
