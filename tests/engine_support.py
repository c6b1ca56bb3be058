"""Engine test harness: a scriptable channel plugin and a router built on real SQLite stores.

The RecorderChannel is a channel plugin of our own (not a stand-in for a remote service): it
records what it receives and answers the outcomes a test scripts, so the engine's retry,
dead-letter and idempotency behaviour can be driven precisely.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from router.channels.base import Channel, ChannelConfig
from router.core.message import Message, Outcome
from router.engine.engine import Engine
from router.plugins.manager import Hooks, build_registry, get_plugin_manager
from router.plugins.registry import Registry
from router.runtime.runtime import Runtime, build_runtime
from router.state import open_state_store
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import Transport
from router.transports.embedded import EmbeddedTransport
from tests.polling import until as until  # re-exported: tests import it from here


class RecorderConfig(ChannelConfig):
    script: list[str] = []  # outcomes to answer in turn: sent | retry | retry-after:SECONDS | failed | hang
    delay: float = 0.0  # seconds each send takes


class RecorderChannel(Channel):
    """Records every message; answers the scripted outcomes, then 'sent'."""

    type_name = "recorder"
    Config = RecorderConfig
    sent: ClassVar[dict[str, list[Message]]] = {}
    attempts: ClassVar[dict[str, int]] = {}

    async def send(self, message: Message) -> Outcome:
        config = self.config
        assert isinstance(config, RecorderConfig)
        count = self.attempts.get(self.name, 0)
        self.attempts[self.name] = count + 1
        if config.delay:
            await asyncio.sleep(config.delay)
        step = config.script[count] if count < len(config.script) else "sent"
        if step == "hang":
            await asyncio.Event().wait()
        if step == "retry":
            return Outcome.retryable("HTTP 503 Service Unavailable")
        if step.startswith("retry-after:"):
            return Outcome.retryable("HTTP 429 Too Many Requests", float(step.split(":", 1)[1]))
        if step == "failed":
            return Outcome.permanent("HTTP 404 Not Found")
        self.sent.setdefault(self.name, []).append(message)
        return Outcome.sent()

    @classmethod
    def reset(cls) -> None:
        cls.sent.clear()
        cls.attempts.clear()


def test_registry() -> Registry:
    registry = build_registry(get_plugin_manager(load_entry_points=False))
    registry.channels["recorder"] = RecorderChannel
    return registry


@dataclass
class Harness:
    """A router engine on an embedded queue and SQLite state in a temporary folder."""

    root: Path
    runtime: Runtime
    transport: Transport
    state: StateStore
    engine: Engine
    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)

    async def publish(self, body: bytes, routing_key: str = "test", content_type: str | None = None) -> None:
        await self.transport.publish_event(body, routing_key=routing_key, content_type=content_type)

    async def close(self) -> None:
        await self.transport.stop_consuming()
        await self.transport.close()
        await self.engine.close()
        await self.state.close()


def write_config(root: Path, rules_yaml: str, templates: dict[str, str]) -> Path:
    (root / "templates").mkdir(exist_ok=True)
    for name, source in templates.items():
        (root / "templates" / name).write_text(source)
    path = root / "rules.yaml"
    path.write_text(rules_yaml)
    return path


async def start_harness(
    root: Path,
    rules_yaml: str,
    templates: dict[str, str],
    *,
    registry: Registry | None = None,
    prefetch: int = 32,
    transport: Transport | None = None,
    state_url: str | None = None,
) -> Harness:
    path = write_config(root, rules_yaml, templates)
    registry = registry or test_registry()
    runtime = build_runtime(path, registry)
    state = open_state_store(state_url or f"sqlite:///{root / 'state.db'}")
    await state.open()
    transport = transport or EmbeddedTransport(root / "queue.db")
    await transport.connect()
    metrics = Metrics()
    pm = get_plugin_manager(load_entry_points=False)
    engine = Engine(runtime, transport=transport, state=state, hooks=Hooks(pm, metrics=metrics), metrics=metrics)
    await transport.start(engine.handle, prefetch=prefetch)
    await engine.start()
    return Harness(root, runtime, transport, state, engine, metrics)
