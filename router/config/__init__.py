"""rules.yaml: models, loading with located errors, and cross-reference validation."""

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
