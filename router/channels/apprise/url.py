"""Any service apprise supports, by its apprise URL (``ntfy://topic``, ``tgram://token/chat``, ...).

A channel may list several URLs, each with apprise tags; ``tags`` then selects which of them
are notified (any URL carrying one of the tags), as ``apprise --tag`` does. One URL per
channel is the better choice where it matters: the URLs of one channel succeed or fail as
a unit, so a retry goes to all of them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.channels.apprise.base import AppriseBackedChannel, AppriseChannelConfig
from router.channels.base import ChannelConfig
from router.config.models import empty_list
from router.core.redact import redact_url, register_secrets, scrub
from router.core.suggest import did_you_mean


def _manager() -> Any:
    from apprise.manager_plugins import NotificationManager

    factory: Any = NotificationManager  # a singleton: every call returns the same manager
    return factory()


def _url_to_dict(url: str) -> dict[str, Any] | None:
    from apprise import plugins

    parse: Any = plugins.url_to_dict
    result = parse(url, secure_logging=True)
    return result if isinstance(result, dict) else None


def _plugin_class(schema: str) -> Any:
    manager = _manager()
    if schema not in manager:  # the manager has no .get()
        return None
    return manager[schema]


def _known_schemas() -> list[str]:
    return sorted(str(s) for s in _manager().schemas())


def url_secrets(url: str) -> list[str]:
    """The private parts of an apprise URL (tokens, passwords, keys), as apprise's plugin declares them."""
    results = _url_to_dict(url)
    if not results:
        return []
    found: list[str] = []
    plugin = _plugin_class(str(results.get("schema", "")))
    private: set[str] = {"password"}
    if plugin is not None:
        for spec in (getattr(plugin, "template_tokens", {}), getattr(plugin, "template_args", {})):
            for key, meta in spec.items():
                if isinstance(meta, dict) and meta.get("private"):
                    private.add(key)
                    if isinstance(meta.get("map_to"), str):
                        private.add(meta["map_to"])
    for key in private:
        value = results.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, (list, tuple, set)):
            found += [v for v in value if isinstance(v, str)]
    return found


_OWN_TYPES = {"discord": "discord", "slack": "slack"}
"""Schemes with a channel type of their own, which controls mentions (router/channels/mentions.py)."""


def check_apprise_url(url: str) -> None:
    """Raise ValueError (never quoting the URL's secrets) unless apprise can load ``url``."""
    import apprise

    text = url.strip()
    schema, sep, _ = text.partition("://")
    if not sep or not schema:
        raise ValueError("expected an apprise URL such as ntfy://topic or json://host/path")
    if _plugin_class(schema.lower()) is None:
        hint = did_you_mean(schema.lower(), _known_schemas())
        raise ValueError(f"apprise does not know the scheme '{schema}://'{hint}")
    if schema.lower() in _OWN_TYPES:
        # Through the generic path apprise would turn @everyone/<@&id> in event data into pings.
        own = _OWN_TYPES[schema.lower()]
        raise ValueError(
            f"use `type: {own}` for {schema}:// URLs: only that channel keeps event data from pinging anyone"
        )
    secrets = url_secrets(text)
    register_secrets(*secrets)  # before apprise logs anything about this URL
    if _url_to_dict(text) is None:
        raise ValueError(f"apprise could not parse this {schema}:// URL")
    try:
        plugin = apprise.Apprise.instantiate(text, suppress_exceptions=False)
    except Exception as exc:
        raise ValueError(f"apprise rejected this {schema}:// URL: {scrub(str(exc), secrets)}") from None
    if plugin is None:
        raise ValueError(f"apprise could not load this {schema}:// URL (see the apprise log)")


class AppriseTarget(BaseModel):
    """One apprise URL with its tags."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when a `type: apprise` channel is

    url: str
    tags: list[str] = Field(default_factory=empty_list)

    @field_validator("url")
    @classmethod
    def _valid(cls, value: str) -> str:
        check_apprise_url(value)
        return value.strip()


class AppriseConfig(AppriseChannelConfig):
    """Options of an ``apprise`` channel::

    anything: {type: apprise, url: "ntfy://my-topic"}
    several:
      type: apprise
      url:
        - {url: "ntfy://ops-topic", tags: [ops]}
        - {url: "pover://USER@TOKEN", tags: [ops, pager]}
      tags: [pager]                   # only the URLs tagged pager are notified
    """

    url: str | list[str | AppriseTarget] = Field(
        description="An apprise URL, or a list of URLs and {url, tags} entries (https://appriseit.com/services/)."
    )
    tags: list[str] = Field(
        default_factory=empty_list,
        description="Notify only the URLs carrying one of these tags; empty: every URL.",
    )

    @field_validator("url")
    @classmethod
    def _valid_urls(cls, value: str | list[str | AppriseTarget]) -> str | list[str | AppriseTarget]:
        if isinstance(value, str):
            check_apprise_url(value)
            return value.strip()
        if not value:
            raise ValueError("give at least one apprise URL")
        for item in value:
            if isinstance(item, str):
                check_apprise_url(item)
        return value

    @model_validator(mode="after")
    def _tags_select_something(self) -> AppriseConfig:
        if self.tags and not any(set(tags) & set(self.tags) for _, tags in self.targets()):
            raise ValueError(f"no URL of this channel carries any of the tags {self.tags}")
        return self

    def targets(self) -> list[tuple[str, list[str]]]:
        """Every (url, tags) pair of the channel."""
        items = [self.url] if isinstance(self.url, str) else self.url
        return [(item, []) if isinstance(item, str) else (item.url, list(item.tags)) for item in items]


class AppriseChannel(AppriseBackedChannel):
    """Sends through any apprise URL."""

    type_name: ClassVar[str] = "apprise"
    Config: ClassVar[type[ChannelConfig]] = AppriseConfig

    config: AppriseConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, AppriseConfig):
            raise TypeError(f"AppriseChannel needs an AppriseConfig, got {type(config).__name__}")
        super().__init__(name, config)

    def secrets(self) -> Iterable[str]:
        found: list[str] = []
        for url, _ in self.config.targets():
            found += url_secrets(url)
        return found

    def apprise_urls(self) -> list[tuple[str, list[str]]]:
        return self.config.targets()

    def tag_filter(self) -> Any:
        if self.config.tags:
            return list(self.config.tags)  # a list means "any of"
        return super().tag_filter()

    def describe(self) -> str:
        shown = ", ".join(redact_url(url) for url, _ in self.config.targets())
        return f"{self.name} (apprise: {shown})"
