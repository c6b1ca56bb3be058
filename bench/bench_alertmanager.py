"""Scenario 7, against Alertmanager: the whole path from an HTTP POST to a webhook, CPU per notification.

Run: ``python bench/bench_alertmanager.py [--events 10000] [--batch 100] [--clients 4] [--rounds 3] [--quick]``

The workload of issue 18, side by side on this machine: N events POSTed over HTTP in batches
of ``--batch`` by ``--clients`` concurrent clients (this process); each becomes one webhook
POST to one local sink (bench/sink.py: aiohttp, keep-alive, its own process). Rows:

- ``alertmanager``: Prometheus Alertmanager (``prometheus-alertmanager``, 0.25 in Debian), fed
  the same events as alerts on ``/api/v2/alerts`` with ``group_by: ['...']`` and
  ``group_wait: 0s``, so that it sends one webhook per alert; its own temporary storage, a free
  web port, clustering off (``--cluster.listen-address=``);
- ``router-amqp``: `router serve --http ...` at its defaults (INFO logging, uvloop, watching
  rules.yaml) with ``broker.url`` amqp: ``POST /events`` publishes to RabbitMQ (confirmed),
  then the router consumes; a fresh exchange and queue per round, deleted after it;
- ``router-embedded``: the same with no broker: the embedded SQLite queue;
- ``router-amqp-warning``, ``router-embedded-warning``: the same at ``--log-level WARNING``;
- ``router-amqp-redis``: ``router-amqp`` with Redis state (a redis-server of its own per round,
  no persistence), the baseline of the next row;
- ``router-amqp-workers2``: ``router-amqp-redis`` as ``router serve --workers 2`` (two consumer
  processes; ``--workers`` above 1 needs RabbitMQ and Redis state); measured once every
  worker's samples are in ``/metrics``, so no child's start-up is in the measured span.

The routers use SQLite state unless the row says Redis, 10 rules (one matches each event) and a ``webhook`` channel at
its default options. Rounds alternate between the rows (the order rotates each round) and
each round starts the system fresh; ``uptime`` is printed before each round.

Figures (medians of the rounds): notifications/s is N over the time from the first POST to
the last arrival at the sink; CPU us per notification is the system's user + system time from
/proc/<pid>/stat over the same span (every thread, and for the router any child process, so
every worker; the RabbitMQ broker's and redis-server's CPU is not included); p50 and p99 latency run from the start of the POST that
carried an event to its arrival at the sink (``time.monotonic()`` in both processes, one clock
on Linux). Correctness, every round: the sink saw each event exactly once (no duplicate, no
unparsed request), the system exited cleanly on SIGTERM, and the router's queues (RabbitMQ's
queue, its retry and dead-letter queues, or the embedded queue file) are empty.

``--compare-tree DIR`` adds the router rows of ``--compare-rows`` (default: the two at the
router's defaults) again, run with ``PYTHONPATH=DIR`` (another copy of the code, e.g. with a
change), so a change is measured against the code before it in the same run. ``--profile`` runs each router row once more under py-spy after the measured
rounds (not counted) and writes ``bench/results/profile-am-<row>.txt`` (collapsed stacks,
``--native --subprocesses --threads``; summarise with bench/profile_summary.py).

Skipped, with a message and exit status 0, when Alertmanager is not installed.
Writes bench/results/alertmanager.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import harness
import yaml
from harness import check, fmt

ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")
# A number no real stamp equals: each body is built once with it, and the POST's own
# time.monotonic() is put in its place just before the request goes out.
TS_PLACEHOLDER = "1234567890.000001"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per round (default 10000)")
    parser.add_argument("--batch", type=int, default=100, help="events (alerts) per POST (default 100)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each row (default 3)")
    parser.add_argument(
        "--rows", help="comma-separated subset of rows (default: all of them)", default=",".join(ROW_NAMES)
    )
    parser.add_argument("--compare-tree", type=Path, help="also run the router rows from this code tree")
    parser.add_argument("--compare-label", default="before", help="suffix of the --compare-tree rows")
    parser.add_argument(
        "--compare-rows",
        default="router-amqp,router-embedded",
        help="the rows --compare-tree repeats (default: the two at the router's defaults)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy each router row once after the rounds")
    parser.add_argument("--profile-only", action="store_true", help="only the py-spy runs, no measured rounds")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 events, 1 round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 2000, 1
    return args


# ----------------------------------------------------------------------------- the events


def events(n: int) -> list[dict[str, Any]]:
    return [harness.event_object(i, ts=float(TS_PLACEHOLDER)) for i in range(n)]


def alert(event: dict[str, Any]) -> dict[str, Any]:
    """An event as an Alertmanager alert: its own labels (so one group each), the sink's line."""
    data = event["data"]
    return {
        "labels": {
            "alertname": event["type"],
            "tenant": data["tenant"],
            "event_id": event["id"],
            "source": event["source"],
        },
        "annotations": {
            "summary": f"{data['user']['name']} completed {data['planet']['name']}",
            # What the router's template renders: the sink finds the event by this line.
            "description": f"id={event['id']} ts={data['ts']}",
        },
    }


def request_bodies(items: list[dict[str, Any]], batch: int) -> list[bytes]:
    return [
        json.dumps(items[start : start + batch], separators=(",", ":")).encode()
        for start in range(0, len(items), batch)
    ]


async def post_all(url: str, bodies: list[bytes], clients: int, expect: int) -> float:
    """POST every body from ``clients`` concurrent clients, each stamped as it goes out.

    Returns the time the last POST was answered.
    """
    pending = list(reversed(bodies))
    placeholder = TS_PLACEHOLDER.encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client() -> None:
            while pending:
                body = pending.pop().replace(placeholder, f"{time.monotonic():.6f}".encode())
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                    check(response.status == expect, f"POST {url} answered {response.status}: {text[:300]}")

        await asyncio.gather(*(client() for _ in range(clients)))
    return time.monotonic()


# ----------------------------------------------------------------------------- CPU of a process tree


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` (every thread), its live descendants and its reaped children.

    utime + stime cover every thread of a process; cutime + cstime add the children it has
    waited for, so a worker that ran and exited during the span is counted too.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        fields = _stat_fields(current)
        if fields is None:
            continue
        # Fields after the command name, 0-based: utime 11, stime 12, cutime 13, cstime 14.
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        todo += _children(current)
    return total / tick


# ----------------------------------------------------------------------------- the systems


@dataclass
class Started:
    """A system under test, up and ready: where to POST, what answers, how to stop and check it."""

    pid: int
    url: str
    status: int
    stop: Callable[[], int]
    log_tail: Callable[[], str]
    after: list[Callable[[], Any]] = field(default_factory=list)  # checks once stopped (may be async)
    cleanup: list[Callable[[], Any]] = field(default_factory=list)


def alertmanager_binary() -> str | None:
    for name in ALERTMANAGER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def alertmanager_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


async def start_alertmanager(sink: harness.Sink, folder: Path, binary: str) -> Started:
    config = {
        "route": {
            "receiver": "sink",
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "sink", "webhook_configs": [{"url": sink.url("/alertmanager"), "send_resolved": False}]}
        ],
    }
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = harness.free_port()
    process = harness.Process(
        "alertmanager",
        [
            binary,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        cwd=folder,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return harness._http_status(base + "/-/ready") == 200
        except OSError:
            return False

    await harness.wait_for(ready, timeout=60, what="Alertmanager to be ready", alive=process.alive)
    return Started(
        pid=process.pid, url=base + "/api/v2/alerts", status=200, stop=process.stop, log_tail=process.log_tail
    )


@dataclass
class RouterRow:
    transport: str  # "amqp" or "embedded"
    log_level: str  # "INFO" (the default) or "WARNING"
    tree: Path | None = None  # PYTHONPATH for the router (None: this checkout)
    state: str = "sqlite"  # or "redis": a private redis-server per round
    workers: int = 1  # router serve --workers


async def start_router(sink: harness.Sink, row: RouterRow, profile: Path | None) -> Started:
    topology = harness.Topology.fresh("am") if row.transport == "amqp" else None
    if topology is not None:
        await topology.declare()
        broker: dict[str, Any] = topology.broker_config()
    else:
        broker = {"url": "", "embedded_path": "queue.db"}
    redis = await start_redis() if row.state == "redis" else None
    workspace = harness.make_workspace(
        broker=broker,
        channels={"hook": {"type": "webhook", "url": sink.url("/router")}},
        rules=harness.tenant_rules(10, channel="hook"),
        state_url=redis.url if redis is not None else None,
    )
    env = {"PYTHONPATH": str(row.tree)} if row.tree is not None else None
    router = harness.RouterProcess(
        workspace,
        broker_url=harness.AMQP_URL if topology is not None else "",
        log_level=row.log_level,
        watch=True,  # the default of `router serve`
        profile=profile,
        py_spy_options=["--native", "--subprocesses"],
        env=env,
        extra_args=["--workers", str(row.workers)] if row.workers > 1 else [],
    )
    started = Started(
        pid=router.router_pid(),
        url=router.url("/events"),
        status=202,
        stop=router.stop,
        log_tail=router.log_tail,
        cleanup=[lambda: shutil.rmtree(workspace.root, ignore_errors=True)],
    )
    if redis is not None:
        started.cleanup.append(redis.stop)
    if topology is not None:

        async def queues_empty() -> None:
            depths = await topology.depths()
            check(all(v == 0 for v in depths.values()), f"messages left in RabbitMQ: {depths}")

        started.after.append(queues_empty)
        started.cleanup.append(topology.delete)
    else:

        def queue_file_empty() -> None:
            with sqlite3.connect(workspace.root / "queue.db") as conn:
                rows = {
                    table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                    for table in ("events", "retries", "dead_letters")
                }
            check(all(v == 0 for v in rows.values()), f"rows left in the embedded queue: {rows}")

        started.after.append(queue_file_empty)
    try:
        await router.wait_ready()
        if row.workers > 1:
            # /readyz is the parent's: wait until every child consumes too (its metrics answer
            # from then on), so that no child's start-up falls inside the measured span.
            await harness.wait_for(
                lambda: workers_serving(router.url("/metrics"), row.workers),
                timeout=60,
                what=f"{row.workers} workers consuming",
                alive=router.alive,
            )
    except BaseException:
        router.stop()
        await run_all(started.cleanup)
        raise
    started.pid = router.router_pid()
    return started


def workers_serving(metrics_url: str, workers: int) -> bool:
    """Whether every worker's samples are in /metrics (a child's appear once it consumes)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return all(f'worker="{i}"' in text for i in range(workers))


@dataclass
class PrivateRedis:
    """A redis-server of a row's own (fresh each round, as the RabbitMQ topology is): no persistence."""

    process: harness.Process
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.process.log_path.parent, ignore_errors=True)


async def start_redis() -> PrivateRedis:
    binary = shutil.which("redis-server")
    check(binary is not None, "redis-server is not installed (the Redis rows need one)")
    assert binary is not None
    port = harness.free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]
    process = harness.Process("redis", args, cwd=folder)

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False

    await harness.wait_for(listening, timeout=20, what="redis-server to listen", alive=process.alive)
    return PrivateRedis(process, port)


async def run_all(actions: list[Callable[[], Any]]) -> None:
    for action in actions:
        result = action()
        if asyncio.iscoroutine(result):
            await result


# ----------------------------------------------------------------------------- one round


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


async def measure(
    name: str, system: Started, sink: harness.Sink, bodies: list[bytes], n: int, clients: int
) -> dict[str, Any]:
    """POST every body to a ready system, wait for N arrivals, stop it and check everything."""
    code: int | None = None
    try:
        sink.reset()
        cpu_before = tree_cpu(system.pid)
        started = time.monotonic()
        await post_all(system.url, bodies, clients, system.status)

        def arrived() -> bool:
            return int(sink.stats()["distinct"]) >= n

        await harness.wait_for(arrived, timeout=60 + n / 50, what=f"{n} webhooks at the sink ({name})")
        cpu_after = tree_cpu(system.pid)
    finally:
        code = system.stop()
    check(code == 0, f"{name} exited with {code}:\n{system.log_tail()}")
    stats = sink.stats(arrivals=True)
    check(stats["distinct"] == n, f"{name}: {stats['distinct']} distinct events at the sink, expected {n}")
    check(stats["duplicates"] == 0, f"{name}: {stats['duplicates']} events arrived more than once")
    check(stats["unparsed"] == 0, f"{name}: {stats['unparsed']} requests at the sink named no event")
    await run_all(system.after)
    latencies = [(arrived - posted) * 1000 for posted, arrived in stats["arrivals"]]
    return {
        "notifications_per_s": n / (stats["last"] - started),
        "cpu_us_per_notification": (cpu_after - cpu_before) / n * 1e6,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "seconds": stats["last"] - started,
    }


# ----------------------------------------------------------------------------- the run


ROW_NAMES = [
    "alertmanager",
    "router-amqp",
    "router-embedded",
    "router-amqp-warning",
    "router-embedded-warning",
    "router-amqp-redis",
    "router-amqp-workers2",
]


def router_rows(args: argparse.Namespace) -> dict[str, RouterRow]:
    rows: dict[str, RouterRow] = {}
    for name in args.rows.split(","):
        if not name.startswith("router-"):
            continue
        transport = "amqp" if "amqp" in name else "embedded"
        level = "WARNING" if name.endswith("-warning") else "INFO"
        redis = name.endswith(("-redis", "-workers2"))
        rows[name] = RouterRow(
            transport, level, state="redis" if redis else "sqlite", workers=2 if "workers2" in name else 1
        )
        if args.compare_tree is not None and name in args.compare_rows.split(","):
            rows[f"{name}-{args.compare_label}"] = dataclasses.replace(rows[name], tree=args.compare_tree.resolve())
    return rows


async def run(args: argparse.Namespace, binary: str) -> dict[str, Any]:
    harness.ensure_plugin()
    items = events(args.events)
    router_bodies = request_bodies(items, args.batch)
    alert_bodies = request_bodies([alert(e) for e in items], args.batch)
    routers = router_rows(args)
    names = [n for n in args.rows.split(",") if n == "alertmanager"] + list(routers)
    unknown = set(args.rows.split(",")) - set(ROW_NAMES)
    check(not unknown, f"unknown rows: {sorted(unknown)} (known: {ROW_NAMES})")
    folder = Path(tempfile.mkdtemp(prefix="router-bench-am-"))
    sink = harness.Sink(folder)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    loads: list[str] = []
    try:
        await sink.wait_ready()

        async def one(name: str, profile: Path | None = None) -> dict[str, Any]:
            if name == "alertmanager":
                storage = Path(tempfile.mkdtemp(prefix="am-", dir=folder))
                system = await start_alertmanager(sink, storage, binary)
                try:
                    return await measure(name, system, sink, alert_bodies, args.events, args.clients)
                finally:
                    if not args.keep:
                        shutil.rmtree(storage, ignore_errors=True)
            system = await start_router(sink, routers[name], profile)
            try:
                return await measure(name, system, sink, router_bodies, args.events, args.clients)
            finally:
                if not args.keep:
                    await run_all(system.cleanup)

        rounds = 0 if args.profile_only else args.rounds
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            load = uptime()
            loads.append(load)
            print(f"round {number + 1} ({load})", flush=True)
            for name in order:
                figures = await one(name)
                figures["load_before_round"] = load
                results[name].append(figures)
                print(
                    f"  {name:<28} {fmt(figures['notifications_per_s']):>7} notifications/s "
                    f"{fmt(figures['cpu_us_per_notification']):>6} CPU us/n "
                    f"p50 {fmt(figures['p50_ms'], 1):>6} ms  p99 {fmt(figures['p99_ms'], 1):>6} ms",
                    flush=True,
                )
        if args.profile or args.profile_only:
            for name in routers:
                path = harness.RESULTS / f"profile-am-{name}.txt"
                harness.RESULTS.mkdir(parents=True, exist_ok=True)
                print(f"profiling {name} ({uptime()}) -> {path.relative_to(harness.ROOT)}", flush=True)
                figures = await one(name, profile=path)
                print(f"  (under py-spy: {fmt(figures['cpu_us_per_notification'])} CPU us/n)", flush=True)
    finally:
        sink.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary: dict[str, Any] = {}
    rows = []
    for name, rounds_of in results.items():
        if not rounds_of:
            continue
        picks = {
            k: [r[k] for r in rounds_of] for k in ("notifications_per_s", "cpu_us_per_notification", "p50_ms", "p99_ms")
        }
        medians = {k: harness.median(v) for k, v in picks.items()}
        summary[name] = {"median": medians, "rounds": rounds_of}
        rows.append(
            [
                name,
                fmt(medians["notifications_per_s"]),
                " ".join(fmt(x) for x in picks["notifications_per_s"]),
                fmt(medians["cpu_us_per_notification"]),
                " ".join(fmt(x) for x in picks["cpu_us_per_notification"]),
                fmt(medians["p50_ms"], 1),
                fmt(medians["p99_ms"], 1),
                " ".join(fmt(x, 0) for x in picks["p99_ms"]),
            ]
        )
    if rows:
        harness.print_table(
            f"Against Alertmanager: {args.events} events x {args.rounds} rounds, POSTed in batches of {args.batch} "
            f"from {args.clients} clients; one webhook each to a local sink",
            ["row", "notif/s", "rounds", "CPU us/n", "rounds", "p50 ms", "p99 ms", "rounds p99"],
            rows,
        )
    return {
        "events": args.events,
        "batch": args.batch,
        "clients": args.clients,
        "rounds": args.rounds,
        "alertmanager": alertmanager_version(binary),
        "compare_tree": str(args.compare_tree) if args.compare_tree else None,
        "uptime_before_rounds": loads,
        "results": summary,
    }


def main() -> None:
    args = parse_args()
    binary = alertmanager_binary()
    if binary is None:
        print(
            "SKIPPED: Prometheus Alertmanager is not installed (looked for "
            f"{' or '.join(ALERTMANAGER_NAMES)} on PATH; Debian: apt-get install prometheus-alertmanager)."
        )
        return
    print(f"{alertmanager_version(binary)} at {binary}", flush=True)
    document = harness.run_async(run(args, binary))
    if not args.profile_only:  # profiled runs are not figures: keep the last measured ones
        harness.write_results("alertmanager-quick" if args.quick else "alertmanager", document)


if __name__ == "__main__":
    main()
