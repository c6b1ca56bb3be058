"""Shared machinery of the end-to-end benchmarks (bench_intake.py, bench_delivery.py, ...).

Each benchmark starts what it needs as separate processes, the way a user runs them: `router
serve` (with ``--log-level WARNING``), the baseline consumers, and a local HTTP sink. The
controller (this process) only publishes, polls and reads figures, so it competes as little
as possible with what is measured.

Clocks: every process stamps with ``time.monotonic()``. On Linux that is CLOCK_MONOTONIC, one
clock for the whole machine, so stamps taken in different processes compare directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import yaml
from aio_pika.abc import DeliveryMode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PLUGIN_DIR = BENCH / "router-bench-plugin"
# Set to "off" to run a scenario with `activity: false` (bench/README.md, "The activity history").
ACTIVITY_SWITCH = "ROUTER_BENCH_ACTIVITY"
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROUTER_BIN = Path(sys.executable).with_name("router")
CLOUDEVENTS = "application/cloudevents+json"

# ----------------------------------------------------------------------------- set-up


def ensure_plugin() -> None:
    """Install bench/router-bench-plugin (the `null` channel) into this environment if needed."""
    try:
        importlib.metadata.distribution("router-bench-plugin")
    except importlib.metadata.PackageNotFoundError:
        print("installing bench/router-bench-plugin (pip install -e) ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", str(PLUGIN_DIR)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_async(main: Any) -> Any:
    """Run the controller's coroutine (uvloop when installed: the controller should stay light)."""
    if uvloop_available():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# ----------------------------------------------------------------------------- figures


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rate(count: int, first: float | None, last: float | None) -> float:
    """Events per second between the first and the last of ``count`` stamps."""
    if first is None or last is None or count < 2 or last <= first:
        return float("nan")
    return (count - 1) / (last - first)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    print()
    print(title)
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print()


LOAD_AT_START = os.getloadavg()


def activity_switched_off() -> bool:
    """Whether ``ROUTER_BENCH_ACTIVITY=off`` asks every scenario's config for ``activity: false``."""
    return os.environ.get(ACTIVITY_SWITCH, "").lower() in ("off", "0", "false")


# Figures without the history go beside, not over, the default run's.
RESULTS = BENCH / "results" / "activity-off" if activity_switched_off() else BENCH / "results"


def machine() -> dict[str, Any]:
    rabbit = ""
    with contextlib.suppress(Exception):
        out = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=20)
        rabbit = out.stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rabbitmq": rabbit or None,
        "uvloop": uvloop_available(),
        # Other work on the machine skews every figure: the 1-minute load when the benchmark
        # started and when it finished (2 cores: above 2 means runnable work waited for a CPU).
        "load_at_start": LOAD_AT_START[0],
        "load_at_end": os.getloadavg()[0],
        "aio_pika": importlib.metadata.version("aio-pika"),
        "activity": "off" if activity_switched_off() else "as configured",
    }


def write_results(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"), **document}
    document["machine"] = machine()
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"figures written to {path.relative_to(ROOT)}")
    return path


def check(condition: bool, message: str) -> None:
    """A benchmark's correctness assertion: a figure for lost events means nothing."""
    if not condition:
        raise SystemExit(f"BENCHMARK INVALID: {message}")


# ----------------------------------------------------------------------------- events


def event_body(index: int, *, tenant: str = "t0", event_type: str = "planet.completed", ts: float = 0.0) -> bytes:
    """One CloudEvents structured-mode event (about 380 bytes), as an application publishes it."""
    return json.dumps(event_object(index, tenant=tenant, event_type=event_type, ts=ts), separators=(",", ":")).encode()


def event_object(
    index: int, *, tenant: str = "t0", event_type: str = "planet.completed", ts: float = 0.0
) -> dict[str, Any]:
    """The event of :func:`event_body`, as a JSON object."""
    return {
        "specversion": "1.0",
        "id": f"{uuid.uuid4().hex}-{index}",
        "source": "bench/app",
        "type": event_type,
        "time": "2025-01-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "tenant": tenant,
            "seq": index,
            "ts": ts,
            "user": {"id": index % 5000, "name": "Ada Lovelace", "tier": "gold"},
            "planet": {"id": index % 300, "name": "Kepler-22b", "difficulty": 4},
        },
    }


# ----------------------------------------------------------------------------- configs


BODY_TEMPLATE = """\
{% block title %}{{ data.user.name }} completed {{ data.planet.name }}{% endblock %}
{% block body %}{{ data.user.name }} finished planet {{ data.planet.name }} (difficulty {{ data.planet.difficulty }}).
id={{ event.id }} ts={{ data.ts }}{% endblock %}
"""


@dataclass
class Workspace:
    """A temporary folder with rules.yaml, templates/ and the router's state and queue files."""

    root: Path
    config: Path
    reports: list[Path] = field(default_factory=list)

    def report_total(self) -> Report:
        """The null channels' figures together: summed counts, the earliest first and latest last send."""
        total = Report()
        for path in self.reports:
            try:
                document = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            total.count += int(document["count"])
            for key, pick in (("first", min), ("last", max), ("cpu_first", min), ("cpu_last", max)):
                if document.get(key) is not None:
                    mine = getattr(total, key)
                    setattr(total, key, document[key] if mine is None else pick(mine, document[key]))
        return total


@dataclass
class Report:
    """What consumers report: a count, wall-clock and CPU stamps of the first and last event."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    cpu_first: float | None = None
    cpu_last: float | None = None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Report:
        return cls(**{k: document.get(k) for k in ("count", "first", "last", "cpu_first", "cpu_last")})

    @property
    def events_per_s(self) -> float:
        return rate(self.count, self.first, self.last)

    @property
    def seconds(self) -> float:
        return (self.last or 0.0) - (self.first or 0.0)

    @property
    def cpu_us_per_event(self) -> float:
        """CPU time of the consumer's process (all threads) per event, in microseconds."""
        if self.cpu_first is None or self.cpu_last is None or self.count < 2:
            return float("nan")
        return (self.cpu_last - self.cpu_first) / (self.count - 1) * 1e6

    def figures(self) -> dict[str, Any]:
        return {
            "events_per_s": self.events_per_s,
            "seconds": self.seconds,
            "cpu_us_per_event": self.cpu_us_per_event,
        }


def make_workspace(
    *,
    broker: dict[str, Any],
    channels: dict[str, dict[str, Any]],
    rules: list[dict[str, Any]],
    templates: dict[str, str] | None = None,
    state_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Workspace:
    """Write a rules.yaml (plus ``extra`` top-level keys) and its templates into a fresh temporary folder.

    With ``ROUTER_BENCH_ACTIVITY=off`` in the environment the config also says ``activity: false``
    (unless ``extra`` says otherwise): every scenario can be run without the activity history.

    Every channel of type ``null`` gets a report file (its ``report`` option) in the folder.
    """
    root = Path(tempfile.mkdtemp(prefix="router-bench-"))
    (root / "templates").mkdir()
    for name, source in (templates or {"event": BODY_TEMPLATE}).items():
        (root / "templates" / f"{name}.j2").write_text(source)
    reports = []
    channels = {name: dict(spec) for name, spec in channels.items()}
    for name, spec in channels.items():
        if spec.get("type") == "null":
            spec["report"] = str(root / f"null-{name}.json")
            reports.append(Path(spec["report"]))
    if activity_switched_off():
        extra = {"activity": False, **(extra or {})}
    config = {
        "version": 1,
        "broker": broker,
        "state": {"url": state_url or f"sqlite:///{root / 'state.db'}"},
        "templates": "templates",
        "defaults": {"retry": {"attempts": 5, "backoff": "100ms", "max_backoff": "1s"}},
        "channels": channels,
        "rules": rules,
        **(extra or {}),
    }
    path = root / "rules.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, width=200))
    return Workspace(root=root, config=path, reports=reports)


def tenant_rules(count: int, *, channel: str, templates: int = 1, matching_tenant: str = "t0") -> list[dict[str, Any]]:
    """``count`` rules shaped like a multi-tenant rules.yaml, exactly one of which matches a
    ``planet.completed`` event of ``matching_tenant`` with difficulty 4.

    Rule i routes one of a few event types for tenant ``t<i>``, half with a threshold; the
    templates are used round-robin (``tpl<k>``, or ``event`` when there is one).
    """
    types = ["planet.completed", "space.completed", "user.signed_up", "order.paid", "badge.earned"]
    rules = []
    for i in range(count):
        when: dict[str, Any] = {"data.tenant": f"t{i}"}
        if i % 2:
            when["data.planet.difficulty"] = {"gte": 3}
        rules.append(
            {
                "name": f"rule-{i}",
                "on": types[i % len(types)] if i else "planet.completed",
                "when": when,
                "template": "event" if templates == 1 else f"tpl{i % templates}",
                "channels": [channel],
            }
        )
    assert matching_tenant == "t0"
    return rules


# ----------------------------------------------------------------------------- processes


def proc_memory(pid: int) -> dict[str, int]:
    """Resident memory of ``pid`` in bytes: ``rss`` now, ``peak`` (VmHWM) since it started."""
    figures = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) * 1024
    return figures


class Process:
    """A child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.peak_rss = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def memory(self) -> dict[str, int]:
        figures = proc_memory(self.pid)
        self.peak_rss = max(self.peak_rss, figures.get("peak", 0))
        return figures

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.alive():
            self.memory()
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._log.close()
        return code


class RouterProcess(Process):
    """`router serve` with a config, a broker URL ('' = embedded queue) and an HTTP port."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        broker_url: str,
        log_level: str = "WARNING",
        loop: str = "default",  # or auto, uvloop, asyncio: `router serve --loop`
        profile: Path | None = None,
        env: dict[str, str] | None = None,
        watch: bool = False,  # True: `router serve`'s default (polls rules.yaml and templates)
        py_spy_options: Sequence[str] = (),
        extra_args: Sequence[str] = (),  # more `router serve` options (e.g. --workers 2)
    ) -> None:
        self.http_port = free_port()
        args = [
            str(ROUTER_BIN),
            "serve",
            "-c",
            str(workspace.config),
            "--broker",
            broker_url,
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--log-level",
            log_level,
        ]
        if not watch:
            args.append("--no-watch")
        args += extra_args
        environment = {"ROUTER_LOAD_PLUGINS": "router-bench-plugin", **(env or {})}
        if loop != "default":
            args += ["--loop", loop]
        if profile is not None:
            args = [
                "py-spy",
                "record",
                "--format",
                "raw",
                "--threads",
                "-o",
                str(profile),
                "--rate",
                "250",
                *py_spy_options,
                "--",
                *args,
            ]
        super().__init__("router", args, cwd=workspace.root, env=environment)
        self.profiled = profile is not None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def router_pid(self) -> int:
        """The router's own pid (under py-spy, the child of py-spy)."""
        if not self.profiled:
            return self.pid
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            if children:
                return int(children[0])
        return self.pid

    def memory(self) -> dict[str, int]:
        figures = proc_memory(self.router_pid())
        self.peak_rss = max(self.peak_rss, figures.get("peak", 0))
        return figures

    def stop(self, timeout: float = 60.0) -> int:
        if self.profiled and self.alive():
            # py-spy writes its profile once the router exits: stop the router, not py-spy.
            self.memory()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.router_pid(), signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        return super().stop(timeout)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"router exited with {self.popen.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                status = await asyncio.to_thread(_http_status, self.url("/readyz"))
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise SystemExit(f"router not ready after {timeout}s:\n{self.log_tail()}")


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def python_process(name: str, script: str, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Process:
    return Process(name, [sys.executable, str(BENCH / script), *args], cwd=cwd, env=env)


async def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool] | None = None
) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail the benchmark after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"BENCHMARK INVALID: timed out after {timeout:.0f}s waiting for {what}")
        if alive is not None and not alive() and not predicate():
            raise SystemExit(f"BENCHMARK INVALID: a process died while waiting for {what}")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------- RabbitMQ


@dataclass
class Topology:
    """A fresh exchange and queue (with the router's .retry and .dead) for one round."""

    exchange: str
    queue: str

    @classmethod
    def fresh(cls, label: str) -> Topology:
        tag = uuid.uuid4().hex[:8]
        return cls(exchange=f"bench-{label}-{tag}", queue=f"bench-{label}-{tag}")

    def broker_config(self, prefetch: int = 256) -> dict[str, Any]:
        return {"url": AMQP_URL, "exchange": self.exchange, "queue": self.queue, "prefetch": prefetch}

    def transport(self) -> Any:
        from router.transports.amqp import AmqpTransport

        return AmqpTransport(AMQP_URL, exchange=self.exchange, queue=self.queue)

    async def declare(self) -> None:
        """Declare exactly what the router declares (its own transport code does it)."""
        transport = self.transport()
        await transport.connect()
        await transport.close()

    async def depths(self) -> dict[str, int]:
        """Messages ready in the queue, its retry queue and its dead-letter queue."""
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            result = {}
            for name in (self.queue, f"{self.queue}.retry", f"{self.queue}.dead"):
                queue = await channel.declare_queue(name, passive=True)
                assert queue.declaration_result is not None
                result[name] = int(queue.declaration_result.message_count or 0)
            return result
        finally:
            await connection.close()

    async def delete(self) -> None:
        with contextlib.suppress(Exception):
            transport = self.transport()
            await transport.connect()
            await transport.delete_topology()
            await transport.close()


class Publisher:
    """Publishes persistent events to an exchange with publisher confirms, pipelined."""

    def __init__(self, exchange: str) -> None:
        self.exchange_name = exchange
        self.connection: Any = None
        self.exchange: Any = None

    async def __aenter__(self) -> Publisher:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await channel.get_exchange(self.exchange_name, ensure=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    def message(self, body: bytes) -> aio_pika.Message:
        return aio_pika.Message(body, content_type=CLOUDEVENTS, delivery_mode=DeliveryMode.PERSISTENT)

    async def publish(self, body: bytes, routing_key: str = "planet.completed") -> None:
        await self.exchange.publish(self.message(body), routing_key=routing_key)

    async def publish_many(
        self, bodies: Iterable[bytes], routing_key: str = "planet.completed", window: int = 1000
    ) -> int:
        """Publish every body, keeping up to ``window`` confirms outstanding; returns the count."""
        slots = asyncio.Semaphore(window)
        failures: list[BaseException] = []

        def settled(future: asyncio.Future[Any]) -> None:
            slots.release()
            if not future.cancelled() and future.exception() is not None:
                failures.append(future.exception())  # type: ignore[arg-type]

        pending: set[asyncio.Future[Any]] = set()
        count = 0
        for body in bodies:
            await slots.acquire()
            future = asyncio.ensure_future(self.exchange.publish(self.message(body), routing_key=routing_key))
            pending.add(future)
            future.add_done_callback(pending.discard)
            future.add_done_callback(settled)
            count += 1
        if pending:
            await asyncio.wait(pending)
        check(not failures, f"{len(failures)} publishes failed: {failures[:1]}")
        return count


async def preload(topology: Topology, count: int, *, body: Callable[[int], bytes] | None = None) -> float:
    """Declare the topology and queue ``count`` events in it; returns the publish rate."""
    await topology.declare()
    make = body or (lambda i: event_body(i))
    started = time.perf_counter()
    async with Publisher(topology.exchange) as publisher:
        await publisher.publish_many(make(i) for i in range(count))
    elapsed = time.perf_counter() - started
    depth = (await topology.depths())[topology.queue]
    check(depth == count, f"queued {depth} events, expected {count}")
    return count / elapsed


# ----------------------------------------------------------------------------- the HTTP sink


class Sink:
    """bench/sink.py in its own process: counts requests per event id and stamps arrivals."""

    def __init__(self, cwd: Path) -> None:
        self.port = free_port()
        self.process = python_process("sink", "sink.py", ["--port", str(self.port)], cwd=cwd)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_ready(self) -> None:
        await wait_for(self._up, timeout=30, what="the HTTP sink", alive=self.process.alive)

    def _up(self) -> bool:
        try:
            return _http_status(self.url("/stats")) == 200
        except (OSError, urllib.error.URLError):
            return False

    def stats(self, *, arrivals: bool = False) -> dict[str, Any]:
        url = self.url("/stats?arrivals=1" if arrivals else "/stats")
        with urllib.request.urlopen(url, timeout=30) as response:
            return dict(json.loads(response.read()))

    def reset(self) -> None:
        request = urllib.request.Request(self.url("/reset"), method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    async def astats(self, *, arrivals: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats, arrivals=arrivals)

    def stop(self) -> None:
        self.process.stop()


# ----------------------------------------------------------------------------- summaries


def summarize(
    results: dict[str, list[dict[str, Any]]], baseline: str
) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
    """Medians per consumer and their ratio to ``baseline``: figures for JSON, rows for the table.

    ``vs base`` is the ratio of median events/s. ``cpu vs base`` compares CPU time per event
    (the baseline's divided by this one's): what the ratio would be if each had a core to
    itself, and much steadier than wall-clock rates on a machine shared with other work.
    """
    base_rate = median([r["events_per_s"] for r in results[baseline]])
    base_cpu = median([r.get("cpu_us_per_event", float("nan")) for r in results[baseline]])
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for name, rounds in results.items():
        rates = [r["events_per_s"] for r in rounds]
        cpus = [r.get("cpu_us_per_event", float("nan")) for r in rounds]
        peak = max((r.get("peak_rss") or 0) for r in rounds) / 2**20
        summary[name] = {
            "median_events_per_s": median(rates),
            "rounds_events_per_s": rates,
            "ratio_to_baseline": median(rates) / base_rate,
            "median_cpu_us_per_event": median(cpus),
            "rounds_cpu_us_per_event": cpus,
            "cpu_ratio_to_baseline": base_cpu / median(cpus),
            "peak_rss_mb": peak,
        }
        rows.append(
            [
                name,
                fmt(median(rates)),
                " ".join(fmt(x) for x in rates),
                f"{median(rates) / base_rate:.2f}x",
                fmt(median(cpus)),
                f"{base_cpu / median(cpus):.2f}x",
                fmt(peak, 1),
            ]
        )
    return summary, rows


SUMMARY_HEADER = ["consumer", "median ev/s", "rounds ev/s", "vs base", "CPU us/ev", "CPU vs base", "peak RSS MB"]


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) ``pid`` has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_to_completion(
    name: str, script: str, args: list[str], *, folder: Path, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a baseline consumer script until it exits; returns the JSON it wrote to ``--out``."""
    out = folder / f"{name}.json"
    process = python_process(name, script, [*args, "--out", str(out)], cwd=folder, env=env)
    try:
        await wait_for(lambda: not process.alive(), timeout=timeout, what=f"the {name} consumer to finish")
    finally:
        code = process.stop()
    check(code == 0, f"{name} exited with {code}:\n{process.log_tail()}")
    return dict(json.loads(out.read_text()))


class CpuWatch:
    """Stamps a process's CPU time when a count first moves and when it reaches its target.

    Polled by the controller (every 20 ms), so each stamp is late by up to a poll: fine for
    runs of seconds. Used where the consumer cannot stamp itself (the router with a real channel).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_first: float | None = None
        self.cpu_last: float | None = None

    def observe(self, count: int, target: int) -> bool:
        if count > 0 and self.cpu_first is None:
            self.cpu_first = proc_cpu(self.pid)
        if count >= target:
            self.cpu_last = proc_cpu(self.pid)
            return True
        return False
