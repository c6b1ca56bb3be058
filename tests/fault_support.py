"""Support for the fault tests (tests/test_faults.py, bench/faults.py): private services to break,
a receiver that counts effects and transmissions, and a router scenario to run through faults.

The shared RabbitMQ (5672) and Redis (6379) are never stopped: a broker outage is a private
RabbitMQ node (own node name, ports and data directory), a state-store outage a private
redis-server, both started here and torn down by their owner.

``ROUTER_FAULT_WORKERS=2`` runs every scenario's router as ``router serve --workers 2``, with
Redis state (``ROUTER_TEST_REDIS_URL``, default db 15 on 6379) where a scenario uses SQLite
and each channel's concurrency split between the processes: the same checks, against one
command of several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web

from router.pipeline.idempotency import idempotency_key
from router.transports import retry_ladder
from tests.fakes.http_sink import free_port
from tests.polling import until as until  # re-exported: tests import it from here
from tests.serve_support import RouterProcess

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
WORKERS = int(os.environ.get("ROUTER_FAULT_WORKERS", "1"))


def _rabbit_tool(name: str) -> str | None:
    """The real rabbitmq script (not Debian's wrapper, which switches to the rabbitmq user)."""
    direct = RABBIT_BIN / name
    if direct.exists():
        return str(direct)
    return shutil.which(name)


# --------------------------------------------------------------------------- private RabbitMQ


class PrivateRabbit:
    """A RabbitMQ node of our own: its own node name, AMQP and distribution ports, data and logs.

    ``rabbitmqctl -n <node>`` talks only to it; the shared node is never addressed.
    """

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.node = f"faults-{tag}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"faults-rabbit-{tag}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
            # Our own config and env files: the system's would put this node on 5672.
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 90.0) -> None:
        """Run ``rabbitmqctl -n <this node> ARGS``; raise with its output when it fails."""
        tool = _rabbit_tool("rabbitmqctl")
        assert tool is not None
        result = subprocess.run(
            [tool, "-n", self.node, *args], env=self._env(), capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stdout!r} {result.stderr!r}")

    def start(self) -> PrivateRabbit:
        server = _rabbit_tool("rabbitmq-server")
        if server is None or _rabbit_tool("rabbitmqctl") is None:
            raise RuntimeError("rabbitmq-server is not installed")
        with open(self.root / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [server], env=self._env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._await_startup(deadline=time.monotonic() + 120)
        except BaseException:
            self.kill()
            raise
        return self

    def _await_startup(self, deadline: float) -> None:
        # await_startup fails at once until the node has registered with epmd: try again until then.
        while True:
            try:
                self.ctl("await_startup", "--timeout", "60", timeout=90)
                return
            except RuntimeError:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rabbitmq-server exited: {self.log_tail()}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop_app(self) -> None:
        """Stop the broker (connections drop, port closes); the Erlang node stays up."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def kill(self) -> None:
        """Stop the node and remove its files (best effort, then by its own process id)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session only
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        path = self.root / "server.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# --------------------------------------------------------------------------- private Redis


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence; stop and start at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.root = Path(tempfile.mkdtemp(prefix="faults-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.root)]
        with open(self.root / "redis.out", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not await _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.root / 'redis.out').read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 20)
        self.proc = None

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


# --------------------------------------------------------------------------- the receiver


@dataclass
class PathStats:
    """What one channel's receiver saw."""

    requests: int = 0  # every request, refused ones included
    accepted: int = 0  # answered 2xx: transmissions that reached the receiver's application
    keys_by_delivery: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    accepted_by_delivery: Counter[str] = field(default_factory=Counter)
    unkeyed_by_delivery: Counter[str] = field(default_factory=Counter)  # accepted without an Idempotency-Key
    bad_keys: int = 0  # a key that is not the documented digest of its delivery
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (arrival, seconds since publish)


class EffectSink:
    """A local HTTP receiver that honours ``Idempotency-Key`` the way a careful API does.

    Per path (one per channel): every request is a *transmission*; an accepted transmission whose
    key was already accepted has no new *effect*. ``fail(path, seconds)`` answers 503 for a while.
    """

    def __init__(self, *, refuse_first_of: int = 0, delay: float = 0.0) -> None:
        self.paths: dict[str, PathStats] = defaultdict(PathStats)
        self.delay = delay  # seconds each request takes (a slower receiver keeps the stream going longer)
        self.arrived: Counter[str] = Counter()
        self._failing_until: dict[str, float] = {}
        # 1 in ``refuse_first_of`` deliveries (by key) is refused (503) the first time: retries in flight.
        self.refuse_first_of = refuse_first_of
        self._refused_once: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def fail(self, path: str, seconds: float) -> None:
        self._failing_until[path] = time.monotonic() + seconds

    def failing(self, path: str) -> bool:
        return time.monotonic() < self._failing_until.get(path, 0.0)

    async def start(self) -> EffectSink:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refuse_first(self, delivery: str) -> bool:
        if not self.refuse_first_of or delivery in self._refused_once:
            return False
        if int(idempotency_key(delivery)[:8], 16) % self.refuse_first_of:
            return False
        self._refused_once.add(delivery)
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        self.arrived[path] += 1  # before the delay: requests in flight show at once
        if self.delay:
            await asyncio.sleep(self.delay)
        stats = self.paths[path]
        stats.requests += 1
        if self.failing(path):
            return web.Response(status=503)
        document = json.loads(body)
        meta = document["meta"]
        delivery = f"{meta['event_id']}:{meta['rule']}:{meta['channel']}"
        key = request.headers.get("Idempotency-Key")
        if self._refuse_first(delivery):
            return web.Response(status=503)
        stats.accepted += 1
        stats.accepted_by_delivery[delivery] += 1
        if key is None:
            stats.unkeyed_by_delivery[delivery] += 1
        else:
            stats.keys_by_delivery[delivery].add(key)
            if key != idempotency_key(delivery):
                stats.bad_keys += 1
        sent_at = document.get("body", "")
        with contextlib.suppress(ValueError):
            stats.latencies.append((time.time(), time.time() - float(sent_at)))
        return web.Response(status=204)

    def tally(self, path: str, expected: Sequence[str]) -> Tally:
        """Lost, duplicated effects and duplicated transmissions of ``expected`` deliveries on ``path``."""
        stats = self.paths[path]
        got = stats.accepted_by_delivery
        lost = sum(1 for delivery in expected if got[delivery] == 0)
        # An effect per distinct key (a receiver honouring the key drops repeats of one key);
        # an unkeyed transmission is an effect of its own.
        effects = {d: len(stats.keys_by_delivery.get(d, ())) + stats.unkeyed_by_delivery[d] for d in got}
        dup_effects = sum(max(0, n - 1) for n in effects.values())
        dup_transmissions = sum(max(0, n - 1) for n in got.values())
        return Tally(
            expected=len(expected),
            delivered=len(expected) - lost,
            lost=lost,
            duplicated_effects=dup_effects,
            duplicated_transmissions=dup_transmissions,
            unexpected=len(set(got) - set(expected)),
            bad_keys=stats.bad_keys,
            refused=stats.requests - stats.accepted,
        )


@dataclass(frozen=True)
class Tally:
    expected: int
    delivered: int
    lost: int
    duplicated_effects: int
    duplicated_transmissions: int
    unexpected: int
    bad_keys: int
    refused: int


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_between(stats: PathStats, start: float, end: float) -> list[float]:
    """Latencies of deliveries that arrived between wall-clock ``start`` and ``end``."""
    return [latency for arrival, latency in stats.latencies if start <= arrival < end]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- the scenario

TEMPLATE = "{% block title %}{{ event.id }}{% endblock %}{% block body %}{{ data.sent_at }}{% endblock %}"


@dataclass
class Scenario:
    """One router setup: a queue of its own, webhook channels to an EffectSink, one rule to all of them."""

    root: Path
    amqp_url: str
    sink: EffectSink
    channels: Sequence[str] = ("hook",)
    state_url: str = "sqlite:///state.db"
    retry: str = "{attempts: 60, backoff: 200ms, max_backoff: 1s, jitter: 0.2}"
    concurrency: int = 32
    prefetch: int = 256
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    routers: list[RouterProcess] = field(default_factory=list)
    workers: int = WORKERS

    def __post_init__(self) -> None:
        if self.workers > 1 and self.state_url.startswith("sqlite"):  # several processes need shared state
            self.state_url = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        # A channel's concurrency bounds each process: split it, so that the scenario's sends in
        # flight (and so its pace, which the faults are timed against) stay those of one router.
        self.concurrency = max(1, self.concurrency // self.workers)

    @property
    def exchange(self) -> str:
        return f"faults-events-{self.tag}"

    @property
    def queue(self) -> str:
        return f"faults-router-{self.tag}"

    def write_config(self) -> None:
        channels = "\n".join(
            f"  {name}: {{type: webhook, url: '{self.sink.url(name)}', concurrency: {self.concurrency}, timeout: 10s}}"
            for name in self.channels
        )
        config = f"""
version: 1
broker:
  url: "{self.amqp_url}"
  exchange: {self.exchange}
  queue: {self.queue}
  prefetch: {self.prefetch}
state: {{url: "{self.state_url}", idempotency_window: 1h}}
defaults:
  retry: {self.retry}
channels:
{channels}
rules:
  - {{name: all, on: '**', template: note, channels: [{", ".join(self.channels)}]}}
"""
        (self.root / "templates").mkdir(exist_ok=True)
        (self.root / "templates" / "note.j2").write_text(TEMPLATE)
        (self.root / "rules.yaml").write_text(config)

    def event_ids(self, count: int) -> list[str]:
        return [f"{self.tag}-{n}" for n in range(count)]

    def expected(self, count: int, channel: str) -> list[str]:
        return [f"{event_id}:all:{channel}" for event_id in self.event_ids(count)]

    async def start_router(self, timeout: float = 60.0) -> RouterProcess:
        args = ("--log-level", "WARNING", "--no-watch", "--workers", str(self.workers))
        router = RouterProcess(self.root, args=args)
        self.routers.append(router)
        return await router.start(timeout)

    def error_lines(self) -> dict[str, int]:
        """The routers' error log lines, counted by message (e.g. requeues while a service was down)."""
        counts: Counter[str] = Counter()
        for router in self.routers:
            counts.update(r.get("msg", "?") for r in router.log_records() if r.get("level") == "error")
        return dict(counts)

    async def stop_routers(self) -> None:
        for router in self.routers:
            await router.stop()

    async def publish(self, count: int, *, rate: float | None = None, start: int = 0) -> None:
        """Publish events ``start..count-1`` (persistent, confirmed), at most ``rate`` per second."""
        await publish_events(self.amqp_url, self.exchange, self.event_ids(count)[start:], rate=rate)

    async def leftovers(self) -> dict[str, int]:
        """Messages still in this router's queues (ready, so the router must be stopped first)."""
        names = [self.queue, f"{self.queue}.retry", f"{self.queue}.dead"]
        names += [f"{self.queue}.retry.{step}" for step in retry_ladder.LADDER]
        left: dict[str, int] = {}
        connection = await aio_pika.connect(self.amqp_url)
        try:
            for name in names:
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    continue  # never declared: nothing was there
                if queue.declaration_result.message_count:
                    left[name] = int(queue.declaration_result.message_count)
                await channel.close()
        finally:
            await connection.close()
        return left

    async def delete_topology(self) -> None:
        from router.transports.amqp import AmqpTransport

        transport = AmqpTransport(self.amqp_url, exchange=self.exchange, queue=self.queue)
        await transport.connect()
        try:
            await transport.delete_topology()
        finally:
            await transport.close()


async def publish_events(amqp_url: str, exchange: str, event_ids: Sequence[str], *, rate: float | None = None) -> None:
    """Publish CloudEvents-style JSON events with confirms, batched; body carries the publish time."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        # Small batches when paced, so events go out evenly rather than in bursts.
        batch = 200 if rate is None else max(1, int(rate / 20))
        started = time.monotonic()
        for offset in range(0, len(event_ids), batch):
            if rate is not None:
                due = started + offset / rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
            chunk = event_ids[offset : offset + batch]
            await asyncio.gather(
                *(
                    target.publish(
                        aio_pika.Message(
                            body=json.dumps(
                                {"type": "fault.test", "id": event_id, "data": {"sent_at": repr(time.time())}}
                            ).encode(),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key="fault.test",
                    )
                    for event_id in chunk
                )
            )
    finally:
        await connection.close()


async def ready_status(router: RouterProcess) -> int | None:
    """``/readyz``'s status, or None when the router does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{router.url}/readyz") as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


# --------------------------------------------------------------------------- whole runs (tests and bench/faults.py)


async def finish(scenario: Scenario, count: int, timeout: float) -> dict[str, Any]:
    """Wait until every delivery arrived, stop the routers, check no message is left; tally each channel."""
    sink = scenario.sink
    for channel in scenario.channels:
        expected = scenario.expected(count, channel)
        got = sink.paths[channel].accepted_by_delivery
        try:
            await until(lambda e=expected, g=got: all(g[d] for d in e), f"every delivery on {channel}", timeout=timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{await _diagnosis(scenario, expected, got)}") from None

    # Records still on their way back (a deferral or retry written twice across a broker outage:
    # the second one is skipped by the sent ledger when it returns) are not left behind; give
    # them their turn, which is at most a few seconds away, before stopping.
    async def settled() -> bool:
        left = await scenario.leftovers()
        return not any(name.endswith(".retry") or ".retry." in name for name in left)

    with contextlib.suppress(AssertionError):  # what is still there is reported below
        await until(settled, "retry records to come back and be consumed", timeout=30, interval=0.5)
    await scenario.stop_routers()  # SIGTERM: in-flight work finishes, so a late duplicate would show
    left = await scenario.leftovers()
    tallies = {channel: sink.tally(channel, scenario.expected(count, channel)) for channel in scenario.channels}
    return {"left_in_queues": left, "tallies": tallies, "router_errors": scenario.error_lines()}


async def _diagnosis(scenario: Scenario, expected: Any, got: Any) -> str:
    """What a timed-out wait for deliveries leaves to go on: what is missing, where the messages
    are, and what the routers logged at WARNING and above (the broker-restart test's rare timeout
    had none of this)."""
    missing = [d for d in expected if not got[d]]
    lines = [f"{len(missing)} of {len(expected)} deliveries missing, e.g. {missing[:5]}"]
    try:
        lines.append(f"messages in the queues: {await scenario.leftovers()}")
    except Exception as error:  # the broker may be the problem
        lines.append(f"queues unreadable: {type(error).__name__}")
    for router in scenario.routers:
        notable = [r for r in router.log_records() if r.get("level") in ("warning", "error", "critical")]
        lines.append(f"router {router.port}: alive={router.proc is not None and router.proc.poll() is None}")
        lines += [f"  {r}" for r in notable[-30:]]
    return "\n".join(lines)


async def run_crash(
    root: Path,
    amqp_url: str,
    *,
    events: int,
    kills: int,
    seed: int | None = None,
    refuse_first_of: int = 50,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Stream ``events`` through a router and SIGKILL it ``kills`` times at random points of the stream.

    Kill points are random fractions of the deliveries (so each falls while events are flowing);
    after each kill a new router process starts on the same queue and state file.
    """
    import random

    rng = random.Random(seed)
    points = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))
    sink = await EffectSink(refuse_first_of=refuse_first_of).start()
    scenario = Scenario(root, amqp_url, sink)
    scenario.write_config()
    started = time.monotonic()
    killed_at: list[int] = []
    try:
        await scenario.start_router()
        publisher = asyncio.create_task(scenario.publish(events))
        stats = sink.paths["hook"]
        for point in points:
            target = int(point * events)
            await until(lambda t=target: len(stats.accepted_by_delivery) >= t, f"{target} deliveries", timeout=timeout)
            router = scenario.routers[-1]
            assert router.proc is not None
            router.proc.kill()  # SIGKILL: no drain, no ack, no ledger write after this instant
            await asyncio.to_thread(router.proc.wait, 30)
            killed_at.append(len(stats.accepted_by_delivery))
            await scenario.start_router()
        await publisher
        result = await finish(scenario, events, timeout)
    finally:
        await scenario.stop_routers()
        await sink.stop()
        await scenario.delete_topology()
    result.update(
        events=events,
        kills=kills,
        killed_at=killed_at,
        wall_seconds=round(time.monotonic() - started, 1),
        refused_first=len(sink._refused_once),
    )
    return result


async def run_channel_outage(
    root: Path,
    amqp_url: str,
    *,
    outage: float,
    rate: float = 50.0,
    before: float = 4.0,
    after: float = 4.0,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Events at ``rate``/s to two channels; ``bad`` answers 503 for ``outage`` seconds mid-stream.

    Returns the tallies and the healthy channel's latency (publish to arrival) before and during
    the outage, measured in the same run.
    """
    sink = await EffectSink().start()
    scenario = Scenario(
        root,
        amqp_url,
        sink,
        channels=("good", "bad"),
        # Backoff capped at 4 s: the failing channel's deliveries arrive within ~4 s of its recovery.
        retry="{attempts: 40, backoff: 1s, max_backoff: 4s, jitter: 0.2}",
    )
    scenario.write_config()
    count = int(rate * (before + outage + after))
    started = time.monotonic()
    try:
        await scenario.start_router()
        publisher = asyncio.create_task(scenario.publish(count, rate=rate))
        await asyncio.sleep(before)  # the fault's schedule, not synchronisation
        outage_start = time.time()
        sink.fail("bad", outage)
        await asyncio.sleep(outage)
        outage_end = time.time()
        await publisher
        result = await finish(scenario, count, timeout)
    finally:
        await scenario.stop_routers()
        await sink.stop()
        await scenario.delete_topology()
    good = sink.paths["good"]
    warm = outage_start - before + 1.0  # skip the first second (connections opening)
    lat_before = latency_between(good, warm, outage_start)
    lat_during = latency_between(good, outage_start, outage_end)
    bad = sink.paths["bad"]
    result.update(
        events=count,
        outage_seconds=outage,
        refused_during_outage=bad.requests - bad.accepted,
        good_before={"n": len(lat_before), "p50": percentile(lat_before, 0.5), "p99": percentile(lat_before, 0.99)},
        good_during={"n": len(lat_during), "p50": percentile(lat_during, 0.5), "p99": percentile(lat_during, 0.99)},
        bad_last_arrival_after_outage=round(max(a for a, _ in bad.latencies) - outage_end, 2),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    return result


async def run_broker_blip(
    root: Path, rabbit: PrivateRabbit, *, events: int = 128, sink_delay: float = 6.0, timeout: float = 180.0
) -> dict[str, Any]:
    """The broker drops the router's connection while every handler is in the middle of a slow send.

    RabbitMQ requeues the unacknowledged events at once and redelivers them after the router
    reconnects, while the first attempts are still sending: the overlap delivery leases exist for.
    """
    sink = await EffectSink(delay=sink_delay).start()
    scenario = Scenario(root, rabbit.url, sink, concurrency=64, prefetch=64)
    scenario.write_config()
    started = time.monotonic()
    try:
        router = await scenario.start_router()
        await scenario.publish(events)
        await until(lambda: sink.arrived["hook"] >= 48, "sends in flight", timeout=60)
        await asyncio.to_thread(rabbit.stop_app)
        await until(lambda: _is(router, 503), "/readyz 503", timeout=30)
        await asyncio.to_thread(rabbit.start_app)
        await until(lambda: _is(router, 200), "/readyz 200", timeout=60)
        result = await finish(scenario, events, timeout)
    finally:
        await scenario.stop_routers()
        await sink.stop()
    result.update(events=events, sink_delay=sink_delay, wall_seconds=round(time.monotonic() - started, 1))
    return result


async def _is(router: RouterProcess, status: int) -> bool:
    return await ready_status(router) == status
