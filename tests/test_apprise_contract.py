"""What the router relies on inside apprise: fails loudly when an apprise upgrade changes it.

pyproject.toml bounds apprise (``<3``); before raising the bound, run this file against the new
version. Each test names the router code that depends on the fact it checks.
"""

from __future__ import annotations

import inspect

import apprise
import pytest
import requests
from apprise.plugins.discord import NotifyDiscord
from apprise.plugins.slack import NotifySlack

from router.channels.discord import DiscordChannel
from router.channels.email import EmailChannel
from router.channels.slack import SlackChannel


def _positional(method: object) -> list[str]:
    params = list(inspect.signature(method).parameters.values())  # type: ignore[arg-type]
    return [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]


def test_asset_accepts_the_options_the_router_sets() -> None:
    # router/channels/apprise/base.py _build(): no retries, no disk, synchronous, no service timeout.
    apprise.AppriseAsset(
        app_id="x", app_desc="x", default_service_retry=0, async_mode=False, storage_mode="memory", service_timeout=0
    )


@pytest.mark.parametrize(("plugin", "channel"), [(NotifyDiscord, DiscordChannel), (NotifySlack, SlackChannel)])
def test_send_takes_the_payload_where_the_channel_wraps_it(plugin: type, channel: type) -> None:
    # AppriseBackedChannel._wrap_send replaces the argument at `payload_argument` (also by keyword).
    names = _positional(plugin._send)
    assert names[channel.payload_argument] == "payload", names


def test_discord_mention_guess_is_what_the_channel_removes() -> None:
    # DiscordChannel.finalize_post drops `allow_mentions` and, with embeds, the whole `content`:
    # apprise puts only its "👉 ..." line there. If apprise starts sending `allowed_mentions`
    # itself or moves text into `content`, this changes.
    plugin = NotifyDiscord(webhook_id="1", webhook_token="abc")
    guess = plugin.ping_payload("hi @everyone <@&42>")
    assert set(guess) == {"allow_mentions", "content"}
    assert guess["content"].startswith("👉 ")


def test_requests_is_the_http_layer_under_discord_and_slack() -> None:
    # router/channels/apprise/capture.py wraps HTTPAdapter.send to classify what apprise received.
    for module in (inspect.getmodule(NotifyDiscord), inspect.getmodule(NotifySlack)):
        assert getattr(module, "requests", None) is requests


@pytest.mark.parametrize("channel", [DiscordChannel, SlackChannel, EmailChannel])
def test_the_plugin_a_channel_builds_directly_is_the_one_apprise_would_pick(channel: type) -> None:
    # AppriseBackedChannel._instantiate builds `apprise_plugin` without apprise's scheme lookup
    # (which imports every service module); it must be the class that lookup finds for the
    # channel's URLs, and parse them as apprise's url_to_dict does.
    import importlib

    from apprise.apprise import N_MGR

    module_name, class_name = channel.apprise_plugin
    plugin_class = getattr(importlib.import_module(module_name), class_name)
    schemas = plugin_class.schemas(plugin_class)
    assert schemas, plugin_class
    for scheme in schemas:
        assert N_MGR[scheme] is plugin_class, scheme
    assert callable(plugin_class.parse_url)
