"""rules.yaml: models, loading with located errors, and cross-reference validation.

The names below are re-exported lazily (module ``__getattr__``) so that importing one
submodule, e.g. ``router.config.channel_options``, does not load them all (pydantic models,
jsonschema, the YAML parser): command start-up time depends on it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.config.json_schema import config_json_schema
    from router.config.loader import LoadedConfig, default_config_path, load_config, load_config_text
    from router.config.models import (
        OPERATORS,
        BrokerConfig,
        ChannelSpec,
        DedupeSpec,
        Defaults,
        DigestSpec,
        RateLimitSpec,
        RetryPolicy,
        RouterConfig,
        Rule,
        StateConfig,
        ThrottleSpec,
    )

_LAZY: dict[str, str] = {
    "config_json_schema": "router.config.json_schema",
    **dict.fromkeys(["LoadedConfig", "default_config_path", "load_config", "load_config_text"], "router.config.loader"),
    **dict.fromkeys(
        [
            "OPERATORS",
            "BrokerConfig",
            "ChannelSpec",
            "DedupeSpec",
            "Defaults",
            "DigestSpec",
            "RateLimitSpec",
            "RetryPolicy",
            "RouterConfig",
            "Rule",
            "StateConfig",
            "ThrottleSpec",
        ],
        "router.config.models",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a re-exported name's module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'router.config' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "OPERATORS",
    "BrokerConfig",
    "ChannelSpec",
    "DedupeSpec",
    "Defaults",
    "DigestSpec",
    "LoadedConfig",
    "RateLimitSpec",
    "RetryPolicy",
    "RouterConfig",
    "Rule",
    "StateConfig",
    "ThrottleSpec",
    "config_json_schema",
    "default_config_path",
    "load_config",
    "load_config_text",
]
