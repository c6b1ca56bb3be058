"""Run `router serve` as a subprocess, the way users run it, for integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from tests.fakes.http_sink import free_port

ROUTER = str(Path(sys.executable).parent / "router")


class RouterProcess:
    """One `router serve` process with its own HTTP port and log file.

    Logs JSON at ``log_level``: DEBUG unless told, because tests follow events through the
    per-event lines (``event handled``, ``delivery sent``) that the default INFO leaves out.
    A ``--log-level`` in ``args`` wins (it comes later on the command line).
    """

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        log_level: str = "DEBUG",
    ) -> None:
        self.root = root
        self.env = dict(env or os.environ)
        self.args = args
        self.log_level = log_level
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / f"router-{self.port}.log"
        self.out_path = root / f"router-{self.port}.out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> RouterProcess:
        with open(self.log_path, "ab") as log, open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    ROUTER,
                    "serve",
                    "--http",
                    f"127.0.0.1:{self.port}",
                    "--log-format",
                    "json",
                    "--log-level",
                    self.log_level,
                    *self.args,
                ],
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=log,
            )
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"router exited with {self.proc.returncode}:\n{self.logs()}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"router not ready within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.logs().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    async def wait_for_log(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if predicate(record):
                    return record
            await asyncio.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout}s:\n{self.logs()[-4000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("router did not exit in time")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                await self.wait_exit(20)
            except AssertionError:
                self.proc.kill()
                self.proc.wait()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape_metrics(router: RouterProcess) -> Samples:
    """Every sample of the router's /metrics, keyed by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"{router.url}/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def amqp_rules(
    amqp_url: str,
    *,
    channels: str,
    rules: str,
    names: Mapping[str, str],
    retry: str = "{attempts: 3, backoff: 100ms, max_backoff: 300ms, jitter: 0}",
    extra: str = "",
) -> str:
    """A rules.yaml on RabbitMQ with per-test exchange and queue names."""
    return f"""
version: 1
broker:
  url: "{amqp_url}"
  exchange: {names["exchange"]}
  queue: {names["queue"]}
  prefetch: 64
state: {{url: "sqlite:///state.db"}}
defaults:
  retry: {retry}
{extra}
channels:
{channels}
rules:
{rules}
"""


def unique_names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"exchange": f"test-events-{tag}", "queue": f"test-router-{tag}"}


async def publish_amqp(amqp_url: str, exchange: str, messages: list[tuple[str, bytes]], **props: Any) -> None:
    """Publish with a plain aio-pika client, as an application would."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for routing_key, body in messages:
            await target.publish(
                aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props),
                routing_key=routing_key,
            )
    finally:
        await connection.close()


async def delete_topology(amqp_url: str, names: Mapping[str, str]) -> None:
    from router.transports.amqp import AmqpTransport

    transport = AmqpTransport(amqp_url, exchange=names["exchange"], queue=names["queue"])
    await transport.connect()
    try:
        await transport.delete_topology()
    finally:
        await transport.close()
