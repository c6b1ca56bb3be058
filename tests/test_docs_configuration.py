"""docs/configuration.md documents every key of rules.yaml.

The keys are read from the pydantic models themselves (the root model and every model reachable
from it, the options every channel accepts, each built-in channel type's ``Config`` and each
built-in job's ``With``), so adding a key without documenting it fails here.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from router.config.channel_options import ChannelConfig, RateLimit
from router.config.models import OPERATORS, RouterConfig
from router.plugins.defaults import BUILTIN_CHANNELS
from router.plugins.manager import build_registry, get_plugin_manager
from router.plugins.registry import Registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def inline_code(doc: str) -> set[str]:
    """Every inline code span of the page, outside fenced blocks."""
    return set(_INLINE_CODE.findall(_FENCE.sub("", doc)))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(get_plugin_manager(load_entry_points=False))


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation refers to, through Optional, unions, lists, dicts, Annotated."""
    if typing.get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _reachable(roots: Iterable[type[BaseModel]]) -> list[type[BaseModel]]:
    """``roots`` and every model reachable from their fields, each once."""
    seen: dict[type[BaseModel], None] = {}
    stack = list(roots)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen[model] = None
        for info in model.model_fields.values():
            stack.extend(_models_in(info.annotation))
    return list(seen)


def _config_models(registry: Registry) -> list[type[BaseModel]]:
    roots: list[type[BaseModel]] = [RouterConfig, ChannelConfig]
    roots += [cls.Config for cls in registry.channels.values()]
    roots += [job.With for job in registry.jobs.values()]
    return _reachable(roots)


def test_the_built_in_channel_types_all_registered(registry: Registry) -> None:
    # A built-in whose module fails to import is skipped with a warning: it would then escape the check below.
    assert len(registry.channels) == len(BUILTIN_CHANNELS), sorted(registry.channels)
    assert "notify" in registry.jobs


def test_the_walk_reaches_the_nested_models(registry: Registry) -> None:
    names = {model.__name__ for model in _config_models(registry)}
    expected = {"RetryPolicy", "OnFailure", "DedupeSpec", "DigestSpec", "HmacAuthSpec", "RateLimit", "AppriseTarget"}
    assert expected <= names
    assert RateLimit in _reachable([ChannelConfig])


def test_every_key_is_documented_as_inline_code(registry: Registry, inline_code: set[str]) -> None:
    missing = [
        f"{model.__module__}.{model.__name__}: `{info.alias or name}`"
        for model in _config_models(registry)
        for name, info in model.model_fields.items()
        if (info.alias or name) not in inline_code
    ]
    assert not missing, "keys missing from docs/configuration.md:\n" + "\n".join(missing)


def test_every_channel_type_and_operator_is_documented(registry: Registry, inline_code: set[str]) -> None:
    missing = [name for name in (*registry.channels, *registry.jobs, *OPERATORS) if name not in inline_code]
    assert not missing, f"not in docs/configuration.md as inline code: {missing}"


def test_relative_links_point_at_files_in_the_repository(doc: str) -> None:
    broken = []
    for target in _LINK.findall(doc):
        path = target.split("#", 1)[0]
        if not path or "://" in path:
            continue
        if not (DOC.parent / path).exists():
            broken.append(target)
    assert not broken, f"links to missing files: {broken}"


def test_no_reference_to_the_design_contract(doc: str) -> None:
    assert "design.md" not in doc.lower()
