"""`router serve --workers N`: the parent process's consumer children.

The parent (worker 0) keeps everything a single router has (HTTP, the file watcher, its own
consumer) and starts N-1 children that only consume: the same command with ``--http off``,
``--no-watch`` and a hidden ``--worker-index``. What this module owns:

- starting them with SIGTERM/SIGINT/SIGHUP blocked, which the child unblocks once its handlers
  are installed (a signal sent meanwhile waits instead of killing it), in their own process
  group (Ctrl-C in a terminal reaches the parent only, which forwards it once);
- restarting a child that exits while the parent is not stopping: after 1 s
  (``$ROUTER_WORKER_BACKOFF`` seconds), doubling to
  :data:`MAX_BACKOFF`; a child that fails :data:`MAX_FAILURES` times in a row (each within
  :data:`STABLE_AFTER` of its start) makes the parent give up and stop with an error;
- forwarding SIGTERM (stop; a second one stops waiting) and SIGHUP (reload) to every child;
- reading each child's metrics from its unix socket, for the parent's ``/metrics``.

Which settings can run with several processes is decided by :func:`check_workers`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from router.config.models import BrokerConfig
from router.core.errors import ConfigError, Problem
from router.support.metrics import merge_by_worker

log = logging.getLogger("router.workers")

MAX_FAILURES = 5
STABLE_AFTER = 30.0  # seconds: a child that ran this long before exiting starts a new count
FIRST_BACKOFF = 1.0  # seconds before the first restart; $ROUTER_WORKER_BACKOFF overrides it
MAX_BACKOFF = 30.0
KILL_MARGIN = 10.0  # seconds past the shutdown timeout before a child that has not exited is killed
SCRAPE_TIMEOUT = 2.0
BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_REDIS_SCHEMES = ("redis", "rediss", "unix")
BROKER_ENV = "ROUTER_WORKER_BROKER"  # the parent's --broker, for its children


def check_workers(workers: int, broker: BrokerConfig, state_url: str) -> None:
    """Refuse, before anything starts, settings that several consumer processes would break."""
    if workers <= 1:
        return
    problems: list[Problem] = []
    if not broker.url:
        problems.append(
            Problem(
                f"--workers {workers} needs RabbitMQ (broker.url or --broker): the embedded queue hands"
                " events out from one process's memory, so a second process would deliver them again;"
                " use --workers 1 with the embedded queue"
            )
        )
    scheme = state_url.partition("://")[0].lower()
    if scheme not in _REDIS_SCHEMES:
        problems.append(
            Problem(
                f"--workers {workers} needs a Redis state store (state.url: redis://...): SQLite state"
                " keeps delivery leases in one process's memory, so two processes could send one"
                " delivery twice after a redelivery; use --workers 1 with SQLite state"
            )
        )
    if problems:
        raise ConfigError(problems)


def parse_workers(value: str) -> int:
    """``--workers``: a number from 1, or ``auto`` for the cores this process may use."""
    if value.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of processes or 'auto'") from None
    if number < 1:
        raise ValueError(f"{number} is below 1")
    return number


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None  # monotonic time of the next start, while waiting to restart


def first_backoff() -> float:
    """Seconds before a dead child's first restart: ``$ROUTER_WORKER_BACKOFF`` when it is a sane number."""
    try:
        value = float(os.environ.get("ROUTER_WORKER_BACKOFF", FIRST_BACKOFF))
    except ValueError:
        return FIRST_BACKOFF
    return value if 0.0 <= value <= MAX_BACKOFF else FIRST_BACKOFF


@dataclass
class Supervisor:
    """Starts, watches, signals and scrapes the children of one ``router serve --workers N``."""

    workers: int
    argv: Sequence[str]  # the child's command line, without the per-child options
    on_give_up: Callable[[], None]
    env: dict[str, str] = field(default_factory=dict)  # added to the children's environment
    children: list[_Child] = field(default_factory=list)
    stopping: bool = False
    failed: str | None = None
    waited: bool = False
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="router-workers-"))  # 0700: the metrics sockets
        self.children = [_Child(i) for i in range(1, self.workers)]
        self._monitor: asyncio.Task[None] | None = None
        self.restarts = Counter(
            "router_worker_restarts", "Worker processes restarted after exiting unexpectedly.", registry=self.registry
        )
        self.running = Gauge(
            "router_workers_running", "Processes consuming, the parent included.", registry=self.registry
        )
        self.running.set_function(lambda: 1 + sum(c.proc is not None and c.proc.poll() is None for c in self.children))

    def socket(self, index: int) -> Path:
        return self.folder / f"worker-{index}.sock"

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._monitor = asyncio.create_task(self._watch(), name="router-workers")

    def _spawn(self, child: _Child) -> None:
        path = self.socket(child.index)
        path.unlink(missing_ok=True)
        argv = [*self.argv, "--worker-index", str(child.index), "--worker-socket", str(path)]
        # Blocked in the child until it has its handlers (see router/app/server.py); the mask
        # is inherited through fork and exec. Restored here at once.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        try:
            child.proc = subprocess.Popen(argv, process_group=0, env={**os.environ, **self.env})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("worker started", extra={"fields": {"child": child.index, "pid": child.proc.pid}})

    async def _watch(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self._spawn(child)
                    continue
                if child.proc is None or (code := child.proc.poll()) is None:
                    continue
                self._exited(child, code, now)
                if self.failed:
                    return
            await asyncio.sleep(0.2)

    def _exited(self, child: _Child, code: int, now: float) -> None:
        child.failures = 1 if now - child.started_at >= STABLE_AFTER else child.failures + 1
        fields = {"child": child.index, "exit_code": code, "failures": child.failures}
        if child.failures >= MAX_FAILURES:
            self.failed = f"worker {child.index} exited {child.failures} times in a row (last exit code {code})"
            log.error("giving up: %s; stopping", self.failed, extra={"fields": fields})
            self.on_give_up()
            return
        delay = min(first_backoff() * 2 ** (child.failures - 1), MAX_BACKOFF)
        log.error("worker exited unexpectedly; restarting in %.3g s", delay, extra={"fields": fields})
        self.restarts.inc()
        child.proc = None
        child.restart_at = now + delay

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every child that is running."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    continue

    def terminate(self) -> None:
        """Stop restarting children and ask each to stop (again: stop waiting for in-flight work)."""
        self.stopping = True
        self.send(signal.SIGTERM)

    async def wait_stopped(self, timeout: float) -> None:
        """Wait for every child to exit; kill those still running after ``timeout`` seconds."""
        self.waited = True
        if not self.stopping:  # not asked by a signal (start-up failed): a first SIGTERM, not a second
            self.terminate()
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        deadline = time.monotonic() + timeout
        for child in self.children:
            proc = child.proc
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.error("worker did not stop in time; killed", extra={"fields": {"child": child.index}})
                proc.kill()
                await asyncio.to_thread(proc.wait)
            elif proc.returncode != 0:
                log.warning(
                    "worker stopped with an error",
                    extra={"fields": {"child": child.index, "exit_code": proc.returncode}},
                )
        for path in self.folder.iterdir():
            path.unlink(missing_ok=True)
        self.folder.rmdir()

    async def metrics(self, own: bytes) -> bytes:
        """The parent's metrics and every reachable child's, each sample labelled with its worker."""
        import aiohttp

        async def scrape(child: _Child) -> tuple[str, bytes] | None:
            path = self.socket(child.index)
            if child.proc is None or not path.exists():
                return None  # starting or restarting: it has nothing yet
            timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)), timeout=timeout) as session,
                    session.get("http://worker/metrics") as response,
                ):
                    return str(child.index), await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                log.debug("worker %d's metrics unreadable: %s", child.index, error)
                return None

        parts = await asyncio.gather(*(scrape(child) for child in self.children))
        return merge_by_worker([("0", own), *(part for part in parts if part is not None)], self.registry)


def child_argv(config_path: Path, args: Sequence[str]) -> list[str]:
    """The command line of a child: this Python running ``router serve`` with ``args``."""
    code = "from router.cli import main; main()"
    return [
        sys.executable,
        "-c",
        code,
        "serve",
        "--config",
        str(config_path.absolute()),
        "--http",
        "off",
        "--no-watch",
        *args,
    ]
