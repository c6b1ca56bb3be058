"""`router serve`: wire config, state, transport, engine and HTTP together and run until stopped.

Lifecycle: load and validate everything (exit 2 on a bad config) -> open the state store ->
connect the transport -> start HTTP -> consume. SIGHUP or a change to rules.yaml or a template
reloads (validated fully before it is swapped in; a bad one keeps the old running). SIGTERM or
SIGINT stops consuming, lets in-flight messages finish within ``shutdown_timeout`` (a second
signal stops waiting: what is unfinished is redelivered after a restart), then closes.

With ``workers`` above 1 this process is worker 0 and starts the others once it consumes
(:mod:`router.app.workers`); it forwards SIGTERM/SIGINT and SIGHUP to them, reloads them after
its own reload on a file change, and waits for them before it exits. A child (``worker_index``
set) serves no HTTP and watches no files; its metrics are read from ``worker_socket``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from router.activity.api import ActivityApi, mount
from router.activity.query import activity_url, open_store
from router.activity.recorder import NullRecorder, Recorder
from router.activity.writer import WriterProcess
from router.app import gc_tuning as heap
from router.app.story import with_not_matched
from router.app.watchdog import Watchdog, stall_after_from_env
from router.app.workers import KILL_MARGIN, Supervisor, check_workers, child_argv
from router.config.models import BrokerConfig
from router.console import routes as console
from router.console.guard import ConsoleGuard
from router.core import signing
from router.core.errors import ConfigError, Problem
from router.engine.dlq import replay_events
from router.engine.engine import Engine, Generation
from router.ingest.auth import IngestGuard
from router.ingest.connections import ConnectionGuard, GuardedSite, connection_cap, raise_open_file_limit
from router.ingest.http import build_app, parse_host_port
from router.plugins.manager import Hooks, build_registry, get_plugin_manager
from router.runtime.runtime import Runtime, build_runtime
from router.state import open_state_store
from router.support.metrics import Metrics
from router.support.private_files import sqlite_files, warn_if_exposed
from router.transports import open_transport

log = logging.getLogger("router.serve")


@dataclass
class ServeOptions:
    """What `router serve` was asked for on the command line."""

    config_path: Path
    broker_url: str | None = None
    queue: str | None = None  # overrides broker.queue
    exchange: str | None = None  # overrides broker.exchange
    http: str | None = "127.0.0.1:8080"
    shutdown_timeout: float = 30.0
    watch: bool = True
    watch_interval: float = 1.0
    dry_run: bool = False  # log deliveries instead of sending them, whatever rules.yaml says
    workers: int = 1  # consumer processes, this one included (router/app/workers.py)
    worker_args: tuple[str, ...] = ()  # what the children are given besides the config path
    worker_index: int | None = None  # set in a child: its number (1..workers-1)
    worker_socket: Path | None = None  # a child's metrics, read by the parent
    worker_env: dict[str, str] = field(default_factory=dict)  # added to the children's environment


class WorkersFailed(Exception):
    """A child of ``--workers`` kept exiting: the parent gave up and stopped."""


class Server:
    """One running router process."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._snapshot: dict[Path, float] = {}
        # Configurations replaced by a reload whose messages may still be in flight.
        self._retired: list[Generation] = []
        self._background: set[asyncio.Task[object]] = set()
        self._signals: list[signal.Signals] = []
        self.watchdog: Watchdog | None = None
        self.supervisor: Supervisor | None = None

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`stop`)."""
        pm = get_plugin_manager()
        registry = build_registry(pm)
        for plugin in registry.errors:
            log.warning("plugin %s was not loaded: %s", plugin.name, plugin.error)
        runtime = build_runtime(self.options.config_path, registry)
        install_record_keys(runtime)
        broker = self._broker_config(runtime)
        if self.options.worker_index is None:
            check_workers(self.options.workers, broker, runtime.config.state.url)
        state = open_state_store(runtime.config.state.url)
        transport = open_transport(broker)
        engine: Engine | None = None
        recorder = self._recorder(runtime, broker)
        runner: web.AppRunner | None = None
        metrics_site: web.AppRunner | None = None
        watcher: asyncio.Task[None] | None = None
        started = False
        # One try for every step: whatever fails (RabbitMQ down, the port taken) closes what
        # was opened before it, instead of leaving threads and connections behind.
        try:
            await state.open()
            await transport.connect()
            warn_if_exposed(private_paths(runtime, state, transport))
            hooks = Hooks(pm, metrics=self.metrics)
            engine = Engine(
                runtime,
                transport=transport,
                state=state,
                hooks=hooks,
                metrics=self.metrics,
                dry_run=self.options.dry_run,
                activity=recorder,
            )
            if isinstance(recorder, Recorder):
                await recorder.start()
            if engine.generation.dry_run:
                why = "--dry-run" if self.options.dry_run else "dry_run: true in the configuration"
                log.warning("dry run: nothing will be sent; deliveries are logged (%s)", why)
            self.engine = engine
            runner = await self._start_http(engine, broker)
            self._install_signals()
            self._snapshot = self._watched()
            watcher = asyncio.create_task(self._watch()) if self.options.watch else None
            heap.settle()  # before the first message: its pause is part of start-up
            await transport.start(engine.handle, prefetch=broker.prefetch)
            self._start_watchdog(engine)
            await engine.start()  # the digest flusher: buckets left open by a restart go out on time
            if self.options.workers > 1 and self.options.worker_index is None and not self.stopping.is_set():
                self._start_workers()
            if self.options.worker_socket is not None:
                metrics_site = await self._serve_worker_metrics(self.options.worker_socket)
                self._watch_parent()
            started = True
            kind = "RabbitMQ" if broker.url else f"embedded queue {broker.embedded_path}"
            fields = {"transport": kind, "rules": len(runtime.config.rules), "dry_run": engine.generation.dry_run}
            log.info("router started", extra={"fields": fields})
            await self.stopping.wait()
            log.info("shutting down: no new messages; waiting for in-flight work")
            if watcher is not None:
                watcher.cancel()
            await bounded("stop consuming", transport.stop_consuming())
            await self._drain(engine)
            await self._stop_workers()
        finally:
            await self._stop_workers()
            self._remove_signals()
            if watcher is not None:
                watcher.cancel()
            for task in list(self._background):
                task.cancel()
            if runner is not None:
                await bounded("close the HTTP server", runner.cleanup())
            if metrics_site is not None:
                await bounded("close the worker metrics socket", metrics_site.cleanup())
            # The transport first: it cancels handlers still running after the timeout (their
            # messages are redelivered), so that no handler uses a channel being closed.
            await bounded("close the broker connection", transport.close())
            if engine is not None:
                await bounded("close the engine", engine.close())
            if isinstance(recorder, Recorder):
                await bounded("close the activity history", recorder.close(), timeout=25.0)
            await bounded("close the state store", state.close())
            if started:
                log.info("router stopped")
        if self.supervisor is not None and self.supervisor.failed:
            raise WorkersFailed(self.supervisor.failed)

    def _start_workers(self) -> None:
        """Start the children (the configuration is valid and this process consumes already)."""
        argv = child_argv(self.options.config_path, self.options.worker_args)
        self.supervisor = Supervisor(self.options.workers, argv, on_give_up=self.stop, env=self.options.worker_env)
        self.supervisor.start()

    async def _stop_workers(self) -> None:
        if self.supervisor is not None and not self.supervisor.waited:
            await self.supervisor.wait_stopped(self.options.shutdown_timeout + KILL_MARGIN)

    async def _serve_worker_metrics(self, path: Path) -> web.AppRunner:
        """A child's metrics on a unix socket only the parent's user can reach (its folder is 0700)."""

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.metrics.render())

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        # Only the parent reads it, and a scrape takes milliseconds: no 60 s grace at shutdown.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        return runner

    def _watch_parent(self) -> None:
        """A child stops when its parent is gone (killed -9): it must not consume on its own."""
        parent = os.getppid()

        async def watch() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
            log.error("the parent process is gone; stopping")
            self.stop()

        task: asyncio.Task[object] = asyncio.create_task(watch())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_watchdog(self, engine: Engine) -> None:
        """Turn /readyz to 503 when the consumer stops making progress while messages wait."""
        self.watchdog = Watchdog(
            last_progress=lambda: engine.last_progress,
            in_flight=lambda: engine.generation.in_flight,
            depth=engine.transport.queue_depth,
            stall_after=stall_after_from_env(),
        )
        task: asyncio.Task[object] = asyncio.create_task(self.watchdog.run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain(self, engine: Engine) -> None:
        """Wait for the messages in flight, on every configuration still in use, until the
        shutdown timeout or a second SIGTERM/SIGINT (Ctrl-C again)."""

        async def idle() -> None:
            for generation in [*self._retired, engine.generation]:
                await generation.idle.wait()

        waiting = asyncio.create_task(idle())
        forced = asyncio.create_task(self._forced.wait())
        try:
            await asyncio.wait({waiting, forced}, timeout=self.options.shutdown_timeout, return_when="FIRST_COMPLETED")
            finished = waiting.done()
        finally:
            waiting.cancel()
            forced.cancel()
        if not finished:
            log.warning("in-flight work did not finish; it will be redelivered")

    def _recorder(self, runtime: Runtime, broker: BrokerConfig) -> NullRecorder:
        """The activity recorder (docs/activity.md); a no-op with ``activity: false``."""
        config = runtime.config.activity
        if not config.enabled:
            return NullRecorder()
        folder = runtime.loaded.path.parent
        url = activity_url(config, folder)
        # Writes run in a child process: a writer thread would share the interpreter lock with
        # the event loop (router/activity/writer.py says what that cost).
        writer = WriterProcess(url, folder, open_store(url, folder).describe())
        return Recorder(
            writer,
            metrics=self.metrics,
            transport="amqp" if broker.url else "embedded",
            capacity=config.buffer,
            retention=config.retention,
            max_bytes=config.max_bytes,
        )

    def _activity_api(self, engine: Engine) -> ActivityApi:
        """The JSON API under /api/; whether it answers is the console guard's decision, per request."""
        config = engine.runtime.config
        store = None
        if config.activity.enabled:
            folder = engine.runtime.loaded.path.parent
            store = open_store(activity_url(config.activity, folder), folder)

        async def replay(event_ids: list[str]) -> dict[str, object]:
            return await replay_events(engine.transport, event_ids)

        return ActivityApi(
            store,
            replay=replay,
            explain=lambda story: with_not_matched(story, engine.runtime),
        )

    def _broker_config(self, runtime: Runtime) -> BrokerConfig:
        broker = runtime.config.broker
        overrides = {"url": self.options.broker_url, "queue": self.options.queue, "exchange": self.options.exchange}
        chosen = {key: value for key, value in overrides.items() if value is not None}
        return broker.model_copy(update=chosen) if chosen else broker

    async def _start_http(self, engine: Engine, broker: BrokerConfig) -> web.AppRunner | None:
        if not self.options.http:
            return None
        host, port = parse_host_port(self.options.http)
        limits = engine.runtime.config.ingest
        # Connection-level limits are fixed at start-up (like the address); see ingest/connections.py.
        open_files = raise_open_file_limit()
        cap = connection_cap(limits.max_connections, open_files)
        if cap < limits.max_connections:
            log.warning(
                "ingest.max_connections lowered from %d to %d: the open-file limit is %d",
                limits.max_connections,
                cap,
                open_files,
            )
        guard = ConnectionGuard(max_connections=cap, header_timeout=limits.header_timeout)

        async def every_worker(own: bytes) -> bytes:
            return own if self.supervisor is None else await self.supervisor.metrics(own)

        app = build_app(
            transport=engine.transport,
            metrics=self.metrics,
            is_ready=lambda: not self.stopping.is_set() and not (self.watchdog and self.watchdog.stalled),
            max_event_bytes=broker.max_body_bytes,
            # Asked per request: a reload's new token or limit applies to the next request.
            ingest=IngestGuard(lambda: engine.runtime.config, max_event_bytes=broker.max_body_bytes).settings,
            guard=guard,
            more_metrics=every_worker if self.options.workers > 1 else None,
        )
        # The guard first: it alone decides who may use /ui/ and /api/, asked per request, so a
        # reload that adds ui.auth on a non-loopback address turns both on without a restart.
        console_guard = ConsoleGuard(lambda: engine.runtime.config, host)
        console.install(app, console_guard)
        mount(app, self._activity_api(engine))
        # keepalive_timeout: aiohttp's own idle close, the same as the guard's deadline.
        # lingering_time=0: a refused request's unread body is not read and discarded for
        # seconds (aiohttp's default 10 s), the connection is closed at once.
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.header_timeout, lingering_time=0)
        await runner.setup()
        try:
            await GuardedSite(runner, host, port, guard).start()
        except OSError as error:
            await runner.cleanup()
            # Name the address and the way out: the default port is often taken on a laptop.
            raise OSError(
                error.errno, f"cannot listen on {host}:{port} ({error.strerror}); choose another with --http HOST:PORT"
            ) from None
        log.info("http listening", extra={"fields": {"address": f"{host}:{port}"}})
        ui = console_guard.state()
        if ui.enabled:
            log.info("console on /ui/ of %s:%d (%s)", host, port, ui.reason)
        else:
            log.warning("the activity API and console are off until ui.auth is set: %s", ui.reason)
        return runner

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon, "SIGHUP")
        self._signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
        if self.options.worker_index is not None:
            # The parent started this child with them blocked (router/app/workers.py): one sent
            # while it was starting is delivered now, to these handlers.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._signals)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals = []

    def _reload_soon(self, why: str) -> None:
        if self.supervisor is not None:
            self.supervisor.send(signal.SIGHUP)
        # Keep a reference: the event loop holds tasks weakly, and a collected task never runs.
        task: asyncio.Task[object] = asyncio.create_task(self.reload(why))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stop(self) -> None:
        """Begin a graceful shutdown; called again, stop waiting for in-flight work."""
        if self.stopping.is_set():
            self._forced.set()
        self.stopping.set()
        if self.supervisor is not None:
            self.supervisor.terminate()

    async def reload(self, why: str) -> bool:
        """Load the configuration again; swap it in only if it is entirely valid."""
        async with self._reload_lock:
            # Taken before reading the files: an edit that lands while loading (an editor
            # saving in two writes) differs from it, so the watcher reloads once more.
            before = self._watched()
            old = self.engine.runtime
            try:
                # Build in a thread: loading thousands of rules must not stall deliveries.
                runtime = await asyncio.to_thread(build_runtime, self.options.config_path, old.registry)
                retiring = self.engine.generation
                await self.engine.swap(runtime)  # builds the channels: a plugin may refuse them
            except Exception as error:
                self._snapshot = before
                self._reload_failed(why, error)
                return False
            self._retired = [g for g in self._retired if not g.idle.is_set()] + [retiring]
            heap.thaw()  # the replaced configuration was frozen at start-up: let it be collected
            if runtime.config.broker != old.config.broker or runtime.config.state != old.config.state:
                log.warning("broker and state settings change only on restart; other changes are applied")
            after = self._watched()
            self._snapshot = {path: before.get(path, mtime) for path, mtime in after.items()}
            self.metrics.config_reloads.labels("success").inc()
            self.metrics.config_last_reload_ok.set(1)
            log.info("configuration reloaded", extra={"fields": {"trigger": why, "rules": len(runtime.config.rules)}})
            return True

    def _reload_failed(self, why: str, error: Exception) -> None:
        self.metrics.config_reloads.labels("failure").inc()
        self.metrics.config_last_reload_ok.set(0)
        if isinstance(error, ConfigError):
            problems = [str(problem) for problem in error.problems]
            text = str(error)
        else:  # a bug or a plugin failing: keep running all the same
            problems = [f"{type(error).__name__}: {error}"]
            text = problems[0]
        log.error(
            "reload failed, keeping the previous configuration:\n%s",
            text,
            # The text line shows the problems in the message; JSON lines carry them as a list.
            extra={"fields": {"trigger": why, "problems": problems[:25]}, "text_hidden": ("problems",)},
        )

    def _watched(self) -> dict[Path, float]:
        # The config path as given may be relative; the runtime's is absolute: key both the same way.
        return watched_files(self.engine.runtime) | watched_files_of_path(self.options.config_path.absolute())

    async def _watch(self) -> None:
        """Reload when rules.yaml or a template changes (mtime polling: no extra dependency)."""
        while True:
            await asyncio.sleep(self.options.watch_interval)
            if self._watched() != self._snapshot and await self.reload("file change") and self.supervisor:
                self.supervisor.send(signal.SIGHUP)  # the children watch no files


def private_paths(runtime: Runtime, *stores: object) -> list[Path]:
    """The files and folders of this router that may hold events, messages or keys: the folder
    `.router` beside rules.yaml (key, cache, default queue), and each SQLite file in use."""
    folder = runtime.loaded.path.parent / ".router"
    paths = [folder, folder / signing.KEY_FILE, folder / "cache"]
    for store in stores:
        path = getattr(store, "path", None)  # SqliteStateStore, EmbeddedTransport
        if isinstance(path, (str, Path)) and str(path) != ":memory:":
            paths += sqlite_files(Path(path))  # not its folder: that may be the project's own
    return paths


def install_record_keys(runtime: Runtime) -> None:
    """Sign and verify retry records and dead letters with the key beside rules.yaml (or the
    environment's): see router/core/signing.py. An unusable key stops the command (exit 2)."""
    try:
        keys = signing.load_keyring(runtime.loaded.path.parent / ".router")
    except (ValueError, OSError) as error:
        raise ConfigError([Problem(f"record signing key: {error}")]) from None
    signing.install(keys)


def watched_files_of_path(path: Path) -> dict[Path, float]:
    try:
        return {path: path.stat().st_mtime}
    except OSError:
        return {path: -1.0}


def watched_files(runtime: Runtime) -> dict[Path, float]:
    """rules.yaml and every template file, with their modification times."""
    files = watched_files_of_path(runtime.loaded.path)
    folder = runtime.loaded.templates_dir
    if folder.is_dir():
        for template in folder.rglob("*.j2"):
            try:
                files[template] = template.stat().st_mtime
            except OSError:
                continue
    return files


async def serve(options: ServeOptions) -> None:
    """Run a router process until it is told to stop."""
    await Server(options).run()


STEP_TIMEOUT = 15.0
"""Seconds one shutdown step (closing a connection, a store, a server) may take."""


async def bounded(step: str, closing: Awaitable[object], *, timeout: float = STEP_TIMEOUT) -> None:
    """Await one shutdown step for ``timeout`` seconds at most, then go on to the next.

    A step that never ends (a broker or store that stops answering mid-close) must not keep
    the process alive after SIGTERM: what it held is redelivered or reopened by the next start.
    """
    try:
        await asyncio.wait_for(closing, timeout)
    except TimeoutError:
        log.warning("shutting down: %s took over %gs; going on without it", step, timeout)
