"""What a channel plugin author relies on: the options every channel accepts keep their meaning,
and a plugin's secret options are scrubbed like the built-ins' (docs/plugins.md)."""

from __future__ import annotations

import json
import re
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from router import Channel, ChannelConfig, Message, Outcome, hookimpl
from router.config.channel_options import COMMON_OPTIONS, config_secrets
from router.plugins.manager import build_registry, get_plugin_manager
from router.plugins.registry import Registry
from router.transports.dead_letters import clean_error
from tests.builders import event_bytes
from tests.engine_support import Harness, start_harness, until
from tests.engine_support import test_registry as recorder_registry

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def registry_with(*channels: type[Channel]) -> Registry:
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_channels(register):  # type: ignore[no-untyped-def]
        for channel in channels:
            register(channel)

    plugin.register_channels = register_channels
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="router-test-plugin")
    return build_registry(pm)


# -- B7: the options every channel accepts ----------------------------------------------------


class SlowConfig(ChannelConfig):
    concurrency: int = Field(2, ge=1, le=1024)  # another default: the same meaning


class SlowChannel(Channel):
    type_name = "slow"
    Config = SlowConfig

    async def send(self, message: Message) -> Outcome:
        return Outcome.sent()


class HijackConfig(ChannelConfig):
    concurrency: str = "parallel"  # type: ignore[assignment]  # another meaning: refused
    enabled: int = 1  # type: ignore[assignment]


class HijackChannel(Channel):
    type_name = "hijack"
    Config = HijackConfig

    async def send(self, message: Message) -> Outcome:
        return Outcome.sent()


class LooseConfig(ChannelConfig):
    concurrency: int = 0  # the bounds dropped: 0 would be accepted


class LooseChannel(Channel):
    type_name = "loose"
    Config = LooseConfig

    async def send(self, message: Message) -> Outcome:
        return Outcome.sent()


def test_a_config_may_change_the_default_of_a_common_option() -> None:
    registry = registry_with(SlowChannel)
    assert registry.channels["slow"] is SlowChannel
    assert not registry.errors


def test_a_config_that_gives_a_common_option_another_meaning_is_refused_naming_it() -> None:
    registry = registry_with(HijackChannel, LooseChannel, SlowChannel)
    assert "hijack" not in registry.channels and "loose" not in registry.channels
    assert registry.channels["slow"] is SlowChannel  # the plugin's other channels still register
    [plugin] = registry.errors
    errors = plugin.error or ""
    assert "HijackChannel.Config changes options every channel accepts" in errors
    assert "'concurrency' is redefined as str (it is int)" in errors
    assert "'enabled' is redefined as int (it is bool)" in errors
    assert "LooseChannel.Config" in errors and "'concurrency' is redefined with other bounds" in errors


def test_plugins_md_lists_every_option_every_channel_accepts() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    section = doc[doc.index("### Options every channel accepts") :]
    section = section[: section.index("\n#", 10)]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    assert listed == set(COMMON_OPTIONS)


# -- B6: a plugin's secret options ------------------------------------------------------------

TOKEN = "s3cr3t-T0ken-do-not-show"


class LeakyConfig(ChannelConfig):
    url: SecretStr
    headers: dict[str, SecretStr] = {}


class LeakyChannel(Channel):
    """Reports its URL in the failure reason, as a careless plugin might."""

    type_name = "leaky"
    Config = LeakyConfig

    async def send(self, message: Message) -> Outcome:
        config = self.config
        assert isinstance(config, LeakyConfig)
        auth = config.headers.get("Authorization")
        header = auth.get_secret_value() if auth else ""
        return Outcome.permanent(f"POST {config.url.get_secret_value()} refused (sent {header})")


def test_config_secrets_finds_nested_secret_values() -> None:
    config = LeakyConfig(
        type="leaky", url=SecretStr("https://x.example/" + TOKEN), headers={"A": SecretStr("Bearer abcdef")}
    )
    assert config_secrets(config) == ["https://x.example/" + TOKEN, "Bearer abcdef"]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    registry = recorder_registry()
    registry.channels["leaky"] = LeakyChannel
    rules = f"""
version: 1
channels:
  ops: {{type: leaky, url: "https://hooks.example.com/hook/{TOKEN}", headers: {{Authorization: "Bearer header-{TOKEN}"}}}}
rules:
  - {{name: r, on: x, template: t, channels: [ops]}}
"""
    h = await start_harness(tmp_path, rules, {"t.j2": "{% block title %}t{% endblock %}b"}, registry=registry)
    yield h
    await h.close()


async def test_a_plugins_secret_never_reaches_the_dead_letter(harness: Harness) -> None:
    await harness.publish(event_bytes("x", "e1"))
    await until(lambda: harness.metrics.dead_letters.labels("permanent")._value.get() == 1)
    [letter] = await harness.transport.dlq_list()
    shown = json.dumps(letter.headers) + letter.body.decode("utf-8", errors="replace")
    assert TOKEN not in shown  # neither the URL nor the header value, in the headers or the record
    assert "refused" in letter.error  # the rest of the reason is kept


def test_clean_error_masks_registered_secrets_and_cuts_urls(harness_secret: None) -> None:
    assert clean_error(f"token {TOKEN}x at https://h.example/p?q=1") == "token ***x at https://h.example"


@pytest.fixture
def harness_secret() -> Iterator[None]:
    from router.core.redact import register_secrets

    register_secrets(TOKEN)
    yield


# -- B2: the Message a channel receives --------------------------------------------------------


def test_titles_and_bodies_are_cut_to_the_class_limits_ending_in_an_ellipsis(tmp_path: Path) -> None:
    from router.templating.templates import Templates

    (tmp_path / "t.j2").write_text("{% block title %}" + "T" * 50 + "{% endblock %}" + "B" * 50)
    rendered = Templates(tmp_path, {}).render("t", {}, max_title=10, max_body=20)
    assert (len(rendered.title), len(rendered.body)) == (10, 20)
    assert rendered.title.endswith("…") and rendered.body.endswith("…")
    assert Templates(tmp_path, {}).render("t", {}).title == "T" * 50  # None: no limit


def test_plugins_md_documents_every_message_field_and_the_idempotency_key() -> None:
    import dataclasses

    from router import Message

    doc = DOCS.read_text(encoding="utf-8")
    section = doc[doc.index("### `Message`: what `send` receives") :]
    section = section[: section.index("\n#", 10)]
    for field in dataclasses.fields(Message):
        assert f"| `{field.name}` |" in section, field.name
    for name in ("max_title", "max_body", "idempotency_key"):
        assert f"`{name}`" in section, name


# -- B8: one outcome vocabulary ----------------------------------------------------------------


async def test_a_dead_lettered_delivery_is_failed_in_the_log_the_metric_and_the_outcome(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import typing

    from router.core.message import OutcomeStatus

    caplog.set_level(logging.INFO, logger="router.delivery")
    await harness.publish(event_bytes("x", "e1"))
    await until(lambda: harness.metrics.dead_letters.labels("permanent")._value.get() == 1)
    [record] = [r for r in caplog.records if r.name == "router.delivery"]
    assert record.fields["outcome"] == "failed"  # type: ignore[attr-defined]
    assert record.getMessage() == "delivery failed"
    assert harness.metrics.deliveries.labels("ops", "failed")._value.get() == 1
    # The words the docs give are exactly the statuses an Outcome can have.
    doc = DOCS.read_text(encoding="utf-8")
    section = doc[doc.index("**One vocabulary.**") :]
    section = section[: section.index("\n#", 10)]
    assert set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)) == set(typing.get_args(OutcomeStatus))
