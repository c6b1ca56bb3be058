"""A publish whose confirm never comes, once: what a publish caught by a reconnect can see.

aio-pika's robust channel can hand a publish the channel of a lost connection; the confirm
then never arrives. ``LostConfirm.install(monkeypatch)`` makes the first ``Exchange.publish``
of the test wait for ever; later ones go to RabbitMQ as usual (the broker stays real).
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest


class LostConfirm:
    """Counts publishes; the first one never returns (only a timeout around it ends it)."""

    def __init__(self) -> None:
        self.calls = 0

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> LostConfirm:
        fake = cls()
        real_publish = aio_pika.Exchange.publish

        async def publish(self: aio_pika.Exchange, *args: object, **kwargs: object) -> object:
            fake.calls += 1
            if fake.calls == 1:
                await asyncio.sleep(3600)
            return await real_publish(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(aio_pika.Exchange, "publish", publish)
        return fake
