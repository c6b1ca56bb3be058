"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) written by ``--profile``.

Run: ``python bench/profile_summary.py bench/results/profile-intake-router.txt [--top 25] [--thread MainThread]``

Prints, per thread, the share of samples, then the functions with the most samples on the
stack (inclusive) and at the top of the stack (self), as a share of the thread's samples.
The same file opens in https://www.speedscope.app (it reads collapsed stacks) as a flame graph.

``--buckets`` (for profiles taken with ``--native``, as bench_alertmanager.py's are) instead
sorts every on-CPU sample of every thread into the parts of the path (:data:`BUCKETS`, first
match wins) and prints each part's share of the process's CPU, and with ``--cpu-us X`` the
microseconds per notification that share is of X (the figure measured without py-spy).
Samples in a wait (a stack through ``pthread_cond_*wait``, ``sem_*wait``, ``epoll_*wait``,
``fdatasync``...: the GIL, a queue, the disk, the loop idling) are not CPU and are left out.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

THREAD = re.compile(r"^(?:process \d+:\")?.*?thread \(?(0x[0-9A-Fa-f]+)\)?")


def parse(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    threads: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "all"
        if frames and frames[0].startswith(("thread", "process")):
            thread = frames.pop(0)
            if frames and frames[0].startswith("thread"):
                thread = frames.pop(0)
        threads[thread].append((frames, int(count)))
    return threads


def short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, file = match.groups()
    for marker in ("site-packages/", "/router/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# Native functions that only appear on the stack of a thread that waits (py-spy --native
# samples them as if running): the GIL, a lock or queue, the event loop's poll, the disk.
WAITS = re.compile(
    r"^(pthread_cond_timedwait|pthread_cond_wait|pthread_cond_clockwait|sem_wait|sem_timedwait|sem_clockwait"
    r"|epoll_wait|epoll_pwait|fdatasync|fsync|nanosleep|clock_nanosleep|select|poll|take_gil|do_futex_wait"
    r"|_queue_SimpleQueue_get_impl) "
)

# The parts of the path, in the order they are tried: a sample goes to the first whose pattern
# matches any of its frames (so logging called by the engine is logging, a webhook's aiohttp
# call under the pipeline is the webhook client, and the engine under the AMQP dispatch is the
# engine).
BUCKETS: list[tuple[str, re.Pattern[str]]] = [
    # Server.run is serve's main coroutine: it builds, connects, then waits; events run in tasks.
    ("start-up, shutdown, imports", re.compile(r"<frozen importlib|gc_tuning\.py|^Server\.run |load_default_certs")),
    ("logging (INFO lines)", re.compile(r"logging/__init__\.py|router/support/logs\.py")),
    ("garbage collector", re.compile(r"^gc_collect_main |^gc_collect ")),
    (
        "webhook client (HTTP client, socket send)",
        re.compile(r"router/channels/webhook\.py|aiohttp/client|aiohttp/connector\.py"),
    ),
    ("SQLite state (ledger, leases; writer thread)", re.compile(r"router-state-sqlite|router/state/")),
    (
        "publish to RabbitMQ + confirms",
        re.compile(
            r"AmqpTransport\._publish |AmqpTransport\.publish_event |basic_publish |_on_confirm_frame |ingest/publisher\.py"
        ),
    ),
    ("embedded queue (SQLite; its thread)", re.compile(r"router-queue-sqlite|EmbeddedTransport\.publish_event ")),
    (
        "ingest (HTTP server, parse, validate)",
        re.compile(r"router/ingest/|aiohttp/web_|aiohttp/http_parser|aiohttp/_http_parser"),
    ),
    (
        "engine (decode, match, render, pipeline)",
        re.compile(r"router/(engine|pipeline|jobs|templating|matching|flow|core|runtime|support)/|jinja2/"),
    ),
    ("embedded queue (SQLite; its thread)", re.compile(r"router/transports/embedded\.py")),
    ("consume from RabbitMQ + ack", re.compile(r"router/transports/amqp\.py|aiormq/|aio_pika/|pamqp/")),
]
OTHER = "event loop, asyncio, other"


def bucket_of(thread: str, frames: list[str]) -> str | None:
    """The part of the path a sample belongs to, or None for a sample in a wait (not CPU)."""
    if any(WAITS.match(frame) for frame in frames):
        return None
    if "MainThread" in thread and not any(frame.startswith("Runner.run ") for frame in frames):
        return BUCKETS[0][0]  # before or after the event loop ran
    for name, pattern in BUCKETS:
        if pattern.search(thread) or any(pattern.search(frame) for frame in frames):
            return name
    return OTHER


def print_buckets(threads: dict[str, list[tuple[list[str], int]]], cpu_us: float | None) -> None:
    counts: Counter[str] = Counter()
    waiting = 0
    for thread, stacks in threads.items():
        for frames, count in stacks:
            name = bucket_of(thread, frames)
            if name is None:
                waiting += count
            else:
                counts[name] += count
    startup = counts.pop(BUCKETS[0][0], 0)
    busy = sum(counts.values())
    print(
        f"{busy} on-CPU samples while serving ({startup} more in start-up and shutdown, {waiting} in a wait: "
        "both left out, as the benchmark's CPU figure leaves them out)"
    )
    for name, count in counts.most_common():
        share = count / busy
        figure = f"  {share * cpu_us:5,.0f} us/notification" if cpu_us else ""
        print(f"  {share:6.1%}{figure}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only threads whose label contains this")
    parser.add_argument("--buckets", action="store_true", help="CPU per part of the path (native profiles)")
    parser.add_argument("--cpu-us", type=float, help="with --buckets: CPU us per notification to share out")
    args = parser.parse_args()
    threads = parse(args.profile)
    if args.buckets:
        print_buckets(threads, args.cpu_us)
        return
    total = sum(c for stacks in threads.values() for _, c in stacks)
    print(f"{total} samples")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        samples = sum(c for _, c in stacks)
        print(f"  {samples / total:6.1%}  {thread}")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        if args.thread and args.thread not in thread:
            continue
        samples = sum(c for _, c in stacks)
        if samples / total < 0.05:
            continue
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for frames, count in stacks:
            names = [short(f) for f in frames]
            for name in set(names):
                inclusive[name] += count
            if names:
                own[names[-1]] += count
        print(f"\n== {thread}: {samples} samples")
        print("-- inclusive")
        for name, count in inclusive.most_common(args.top):
            print(f"  {count / samples:6.1%}  {name}")
        print("-- self")
        for name, count in own.most_common(args.top):
            print(f"  {count / samples:6.1%}  {name}")


if __name__ == "__main__":
    main()
