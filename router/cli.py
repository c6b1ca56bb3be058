"""The `router` command line: thin click commands over the modules below it.

Exit codes (docs/configuration.md): 0 success; 1 what was checked or tested is wrong; 2 the command could
not do its work (usage error, a configuration that does not load, an unreadable event file,
a template that fails to render).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from router.core.errors import ConfigError, RouterError
from router.core.version import __version__

if TYPE_CHECKING:  # imported where used: start-up time (bench/bench_startup.py)
    from router.plugins.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

MAX_PROBLEMS_SHOWN = 25
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def config_option(func: F) -> F:
    """``-c/--config``, shared by every command that reads rules.yaml."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Path to rules.yaml (default: $ROUTER_CONFIG or ./rules.yaml).",
    )(func)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``; never a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def format_config_error(error: ConfigError) -> str:
    """A one-screen rendering of every problem (capped) in a ConfigError."""
    problems = error.problems
    lines = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the configuration:"
    return "\n".join([head, *(f"  {line}" for line in lines)])


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """The cyclic garbage collector off while modules and the configuration load.

    Loading allocates a few hundred thousand objects that live as long as the command; with the
    collector on, some 85 young and middle collections scan them again while they pile up
    (~3% of `router check`'s CPU). What loading leaves in cycles goes at the first collection
    after it. ``build_runtime`` pauses the collector for the build alone; this covers the imports too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_registry() -> Registry:
    from router.plugins.manager import build_registry

    registry = build_registry()
    for plugin in registry.errors:
        click.echo(f"warning: plugin {plugin.name} was not loaded: {plugin.error}", err=True)
    return registry


def resolve_config_path(config_path: Path | None) -> Path:
    """The rules file to use; exit 2 with what to do when it does not exist."""
    from router.config.loader import default_config_path

    path = config_path if config_path is not None else default_config_path()
    if not path.expanduser().exists():
        where = "" if path.is_absolute() else f" (in {Path.cwd()})"
        fail(
            f"{path}: file does not exist{where}.\n"
            "  Start one here with `router init`, or point to yours with -c PATH or $ROUTER_CONFIG."
        )
    return path


def load_runtime(config_path: Path | None, registry: Registry | None = None) -> Any:
    """Build the Runtime, or exit 2 with the configuration's problems."""
    try:
        with loading():  # from here: resolve_config_path imports the configuration modules
            from router.runtime.runtime import build_runtime

            return build_runtime(resolve_config_path(config_path), registry or load_registry())
    except ConfigError as error:
        fail(format_config_error(error))


def read_json_file(path: Path, what: str = "event file") -> tuple[Any, bytes]:
    """Parse a JSON file; exit 2 with a located message when it is not JSON."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        fail(f"cannot read {what} {path}: {error.strerror}")
    try:
        return json.loads(raw), raw
    except UnicodeDecodeError:
        fail(f"{path}: {what} is not UTF-8 text")
    except json.JSONDecodeError as error:
        fail(f"{path}:{error.lineno}:{error.colno}: {what} is not valid JSON: {error.msg}")


def load_event_file(path: Path) -> Any:
    """Read an event from a JSON file, as `router test` and `router render` take it."""
    from router.core.events import event_from_object

    obj, raw = read_json_file(path)
    try:
        return event_from_object(obj, body_for_id=raw)
    except RouterError as error:
        fail(f"{path}: {error}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="router")
def cli() -> None:
    """Route domain events to people: match rules, render templates, deliver to channels."""


@cli.command()
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a configuration in DIRECTORY (default: here): rules.yaml, a template, an event, cases.

    The files pass `router check` and `router test --cases cases.yaml`. Nothing is overwritten:
    when one of the files exists, nothing is written (exit 2).
    """
    from router.app.scaffold import init_project

    try:
        result = init_project(directory)
    except OSError as error:
        fail(f"cannot write in {directory}: {error.strerror}")
    if result.existing:
        shown = ", ".join(str(path) for path in result.existing)
        fail(f"not overwriting existing files: {shown} (nothing was written)")
    for path in result.written:
        click.echo(f"wrote {path}")
    cd = "" if directory == Path(".") else f"cd {directory} && "
    click.echo(f"next: {cd}router check && router test --cases cases.yaml")


@cli.command()
@config_option
def check(config_path: Path | None) -> None:
    """Validate rules.yaml and compile every template.

    Exit 0 when everything is valid, 1 when the configuration or a template has errors.
    """
    try:
        with loading():  # from here: resolve_config_path imports the configuration modules
            from router.runtime.runtime import build_runtime

            path = resolve_config_path(config_path)
            runtime = build_runtime(path, load_registry())
    except ConfigError as error:
        click.echo(format_config_error(error), err=True)
        sys.exit(1)
    config = runtime.config
    click.echo(f"{path}: OK")
    channel_lines = []
    for name, spec in config.channels.items():
        enabled = runtime.channel_enabled(name)
        channel_lines.append(f"{name} ({spec.type}{'' if enabled else ', disabled'})")
    click.echo(f"  channels:  {len(config.channels)}: {', '.join(channel_lines) or '-'}")
    click.echo(f"  rules:     {len(config.rules)}: {', '.join(r.name for r in config.rules) or '-'}")
    names = runtime.templates.names()
    click.echo(f"  templates: {len(names)} compiled: {', '.join(names) or '-'}")
    transport = "RabbitMQ" if config.broker.url else "embedded SQLite queue"
    click.echo(f"  broker:    {transport}")


def _verdict_json(verdict: Any) -> dict[str, Any]:
    from router.matching.paths import MISSING

    return {
        "rule": verdict.rule.name,
        "matched": verdict.matched,
        "fired": verdict.fired,
        "reason": verdict.reason,
        "channels": list(verdict.rule.channels) if verdict.fired else [],
        "job": verdict.rule.job,
        "conditions": [
            {
                "path": c.path,
                "operator": c.operator,
                "expected": c.expected,
                "actual": None if c.actual is MISSING else c.actual,
                "missing": c.actual is MISSING,
                "ok": c.ok,
            }
            for c in verdict.conditions
        ],
    }


def _fired(verdicts: list[Any]) -> tuple[list[str], list[str]]:
    rules: list[str] = []
    channels: list[str] = []
    for verdict in verdicts:
        if verdict.fired:
            rules.append(verdict.rule.name)
            channels.extend(c for c in verdict.rule.channels if c not in channels)
    return rules, channels


@cli.command(name="test")
@click.argument("event_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--explain",
    is_flag=True,
    help="Show why each rule did not fire, and what flow control (dedupe, throttle, ...) does with those that do.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--cases",
    "cases_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML list of events with the rules/channels they must route to; exit 1 on a mismatch.",
)
@config_option
def test_command(
    event_file: Path | None, explain: bool, as_json: bool, cases_file: Path | None, config_path: Path | None
) -> None:
    """Show which rules and channels EVENT_FILE (JSON) routes to, or check a file of --cases."""
    if (event_file is None) == (cases_file is None):
        fail("give either EVENT_FILE or --cases CASES.yaml (see router test --help)")
    runtime = load_runtime(config_path)
    if cases_file is not None:
        from router.app.cases import run_cases

        try:
            ok = run_cases(runtime, cases_file, echo=click.echo, as_json=as_json)
        except RouterError as error:
            fail(str(error))
        sys.exit(0 if ok else 1)
    assert event_file is not None
    event = load_event_file(event_file)
    schema = runtime.loaded.event_schemas.get(event.type)
    problem = schema.check(event.data) if schema is not None else None
    if problem is not None:  # the router dead-letters it before matching: nothing is delivered
        if as_json:
            head = {"event": {"id": event.id, "type": event.type, "source": event.source}, "rules": [], "channels": []}
            click.echo(json.dumps({**head, "schema": {"valid": False, "error": problem}}, indent=2))
        else:
            click.echo(f"event {event.type} (id {event.id})")
            click.echo(f"  ✗ does not match the schema declared for '{event.type}' in events:")
            click.echo(f"      {problem}")
            click.echo("  nothing is delivered: the router dead-letters it (reason schema)")
        sys.exit(1)
    verdicts = runtime.index.explain(event)
    rules, channels = _fired(verdicts)
    if as_json or explain:  # only then: it imports the flow and pipeline modules (start-up time)
        from router.flow.explain import describe_flow
    from router.app.render_check import render_failures

    # Routing alone passes a template with a typo: render what each fired rule would send.
    failures = render_failures(runtime, [v.rule for v in verdicts if v.fired], event)
    disabled = [c for c in channels if not runtime.channel_enabled(c)]
    if as_json:
        payload = {
            "event": {"id": event.id, "type": event.type, "source": event.source},
            "rules": rules,
            "channels": channels,
            "disabled_channels": disabled,
            "verdicts": [_verdict_json(v) for v in verdicts],
            "flow": {v.rule.name: describe_flow(runtime, v.rule, event) for v in verdicts if v.fired},
            "render_errors": [
                {"rule": f.rule, "channel": f.channel, "channel_type": f.channel_type, "error": f.error}
                for f in failures
            ],
        }
        click.echo(json.dumps(payload, indent=2, default=str))
        sys.exit(1 if failures else 0)

    def shown(channel: str) -> str:
        return f"{channel} (disabled)" if channel in disabled else channel

    click.echo(f"event {event.type} (id {event.id})")
    if not rules:
        click.echo("  no rule matched")
    for verdict in verdicts:
        if verdict.fired:
            rule = verdict.rule
            target = ", ".join(map(shown, rule.channels)) if rule.job == "notify" else f"job {rule.job}"
            click.echo(f"  ✓ {rule.name} -> {target}{'  (stop)' if rule.stop else ''}")
            if explain:
                for line in describe_flow(runtime, rule, event):
                    click.echo(f"      {line}")
                for channel in (c for c in rule.channels if c in disabled):
                    click.echo(f"      channel {channel}: disabled (enabled: false): nothing is sent to it")
        elif explain:
            click.echo(f"  ✗ {verdict.rule.name}: {verdict.reason}")
    if channels:
        click.echo(f"channels: {', '.join(map(shown, channels))}")
    for failure in failures:
        click.echo(f"  ✗ template fails to render: {failure}")
    if failures:
        sys.exit(1)


@cli.command()
@click.argument("template", required=False)
@click.option("--rule", "rule_name", help="Render the template of this rule, for each of its channels.")
@click.option(
    "--event",
    "event_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Event JSON file to render with.",
)
@click.option("--channel", "channel_name", help="Render only as this configured channel receives it.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {channel, title, body}, with the JSON body a discord/slack channel would post"
    " (payload) and whether it came from the template's channel block (rich).",
)
@config_option
def render(
    template: str | None,
    rule_name: str | None,
    event_file: Path,
    channel_name: str | None,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Preview a notification: render TEMPLATE (or --rule NAME) with an event, per channel."""
    with loading():
        from router.config.models import Rule
        from router.core.errors import TemplateError
        from router.core.suggest import did_you_mean

    if (template is None) == (rule_name is None):
        fail("give either TEMPLATE or --rule NAME (see router render --help)")
    runtime = load_runtime(config_path)
    event = load_event_file(event_file)
    schema = runtime.loaded.event_schemas.get(event.type)
    problem = schema.check(event.data) if schema is not None else None
    if problem is not None:  # as `router test`: the router would dead-letter it, nothing renders
        fail(
            f"{event_file}: does not match the schema declared for '{event.type}' in events: {problem}"
            " (the router dead-letters it with reason schema; nothing is rendered)",
            code=1,
        )
    config = runtime.config
    if channel_name is not None and channel_name not in config.channels:
        fail(f"unknown channel '{channel_name}'{did_you_mean(channel_name, config.channels)}")
    if rule_name is not None:
        found = runtime.rule(rule_name)
        if found is None:
            fail(f"unknown rule '{rule_name}'{did_you_mean(rule_name, runtime.rules_by_name)}")
        rule = found
        if rule.template is None:
            fail(f"rule '{rule_name}' has no template (its job is {rule.job})")
        channels = [channel_name] if channel_name else list(rule.channels)
        if not channels:
            # A job rule without `channels:` renders for the channels its `with:` names
            # (ChannelRef fields), as the job's ctx.render(channel) would; else for none.
            from router.config.job_options import channel_refs

            named = (name for _, name in channel_refs(runtime.job_options(rule)))
            channels = list(dict.fromkeys(name for name in named if name in config.channels))
        if not channels and not as_json:
            click.echo(
                f"rule '{rule.name}' runs job '{rule.job}' and names no channel:"
                " rendered as the job's ctx.render() sees it, without a channel type"
            )
    else:
        assert template is not None
        if not runtime.templates.exists(template):
            fail(f"unknown template '{template}'{did_you_mean(template, runtime.templates.names())}")
        rule = Rule.model_validate({"name": "(preview)", "on": "**", "template": template, "job": "preview"})
        channels = [channel_name] if channel_name else []
    results: list[dict[str, Any]] = []
    try:
        if channels:
            for name in channels:
                # A digest rule's template expects a batch: preview it as a batch of this one event.
                batch = [event] if rule.digest is not None else None
                message = runtime.render(rule, name, event, template=template, events=batch)
                result: dict[str, Any] = {"channel": name, "title": message.title, "body": message.body}
                # Exactly the JSON the channel would post, for channels that post JSON (not console, email).
                # The text output shows it for a message from a channel block only: for any other it is
                # not worked out (it would import apprise and requests, ~0.15 s of start-up, for nothing).
                shown = as_json or message.payload is not None
                bodies = preview_bodies(runtime, name, message) if shown else None
                if bodies is not None:
                    result["rich"] = message.payload is not None  # from the template's {% block <type> %}
                    result["payload"] = bodies[0] if bodies else None
                    if len(bodies) > 1:
                        result["payloads"] = bodies
                results.append(result)
        else:
            # No channel: the template as no channel type sees it (a job rule's ctx.render()).
            batch = [event] if rule.digest is not None else None
            plain = runtime.render(rule, None, event, template=template, events=batch)
            results.append({"channel": "", "title": plain.title, "body": plain.body})
    except TemplateError as error:
        fail(str(error))
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for i, result in enumerate(results):
        if i:
            click.echo()
        if result["channel"]:
            kind = runtime.channel_type(result["channel"])
            click.echo(click.style(f"── {result['channel']} ({kind}) ──", bold=True))
        if result["title"]:
            click.echo(f"Title: {result['title']}")
        click.echo(result["body"])
        if result.get("rich") and result.get("payload") is not None:
            click.echo(f"Payload ({{% block {runtime.channel_type(result['channel'])} %}}):")
            click.echo(json.dumps(result.get("payloads") or result["payload"], indent=2, ensure_ascii=False))


def preview_bodies(runtime: Any, channel: str, message: Any) -> list[dict[str, Any]] | None:
    """The request bodies ``channel`` would post for ``message`` (nothing is sent); None if unknown."""
    try:
        with loading():  # builds the channel's apprise plugin: imports apprise and requests
            import asyncio

            instance = runtime.channel_class(channel)(channel, runtime.loaded.channel_configs[channel])
    except Exception:  # a channel that cannot be built here cannot preview; the render still shows
        return None
    try:
        bodies: list[dict[str, Any]] | None = instance.preview(message)
        return bodies
    finally:
        asyncio.run(instance.aclose())


@cli.command()
def schema() -> None:
    """Print the JSON Schema of rules.yaml (for editor completion and validation)."""
    from router.config.json_schema import config_json_schema

    click.echo(json.dumps(config_json_schema(load_registry()), indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plugins as JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions and what each registered."""
    from dataclasses import asdict

    from router.plugins.manager import build_registry

    registry = build_registry()
    if as_json:
        click.echo(json.dumps([asdict(p) for p in registry.plugins], indent=2))
        return
    for plugin in registry.plugins:
        version = f" {plugin.version}" if plugin.version else ""
        click.echo(f"{plugin.name}{version} ({plugin.source})")
        if plugin.error:
            click.echo(f"  FAILED: {plugin.error}")
        for label, items in (("channels", plugin.channels), ("jobs", plugin.jobs), ("filters", plugin.filters)):
            if items:
                click.echo(f"  {label}: {', '.join(items)}")
        if plugin.hooks:
            click.echo(f"  hooks: {', '.join(plugin.hooks)}")


@cli.command()
@click.option("--broker", "broker_url", help="Broker URL (amqp://...); overrides rules.yaml. Empty = embedded queue.")
@click.option(
    "--queue",
    help="RabbitMQ queue to consume; overrides broker.queue. Routers consuming one queue share its events.",
)
@click.option("--exchange", help="RabbitMQ exchange the queue is bound to; overrides broker.exchange.")
@click.option(
    "--http",
    "http",
    default="127.0.0.1:8080",
    show_default=True,
    envvar="ROUTER_HTTP",
    show_envvar=True,
    help="HOST:PORT for ingest, health and metrics; 'off' to disable.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Log line format."
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    help="DEBUG, INFO, WARNING or ERROR (any case).",
    shell_complete=lambda ctx, param, incomplete: [x for x in LOG_LEVELS if x.startswith(incomplete.upper())],
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight work may take to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--no-watch", is_flag=True, help="Do not reload when rules.yaml or a template changes (SIGHUP still does)."
)
@click.option(
    "--loop",
    "loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    envvar="ROUTER_LOOP",
    show_envvar=True,
    help="Event loop: uvloop (faster; pip install uvloop) or asyncio's own; auto picks uvloop when installed.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render every delivery and log it (at INFO) instead of sending it; events are still consumed and"
    " acknowledged. Overrides dry_run in rules.yaml.",
)
@click.option(
    "--workers",
    metavar="N|auto",
    default="1",
    show_default=True,
    envvar="ROUTER_WORKERS",
    show_envvar=True,
    help="Consumer processes, this one included, or 'auto' (one per core). Above 1 needs RabbitMQ and Redis state;"
    " one HTTP server, one log stream, one /metrics (a worker label).",
)
@click.option("--worker-index", type=int, hidden=True)  # a child of --workers: router/app/workers.py
@click.option("--worker-socket", type=click.Path(path_type=Path), hidden=True)
@config_option
def serve(
    broker_url: str | None,
    queue: str | None,
    exchange: str | None,
    http: str,
    log_format: str,
    log_level: str,
    shutdown_timeout: float,
    no_watch: bool,
    loop: str,
    dry_run: bool,
    workers: str,
    worker_index: int | None,
    worker_socket: Path | None,
    config_path: Path | None,
) -> None:
    """Run the router: consume events, deliver notifications, serve HTTP.

    With no broker URL (in rules.yaml or --broker) events come from the embedded SQLite
    queue, fed by POST /events. Reloads on SIGHUP and when rules.yaml or a template changes;
    stops gracefully on SIGTERM or SIGINT.
    """
    import asyncio

    from router.app.server import ServeOptions, WorkersFailed
    from router.app.server import serve as run_server
    from router.app.workers import BROKER_ENV, parse_workers
    from router.support.logs import configure_logging

    if log_level.upper() not in LOG_LEVELS:  # a usage error, before anything starts
        fail(f"--log-level: {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    try:
        processes = parse_workers(workers)
    except ValueError as error:
        fail(f"--workers: {error}")
    path = resolve_config_path(config_path)  # no rules.yaml: exit 2 before logging is set up
    if worker_index is not None and broker_url is None:
        # The parent's --broker, passed in the environment: a command line is visible to every user.
        broker_url = os.environ.get(BROKER_ENV)
    if worker_index is not None:
        number: int | None = worker_index
    else:
        number = 0 if processes > 1 else None
    configure_logging("json" if log_format == "json" else "text", log_level, worker=number)
    child_args = ["--log-format", log_format, "--log-level", log_level, "--shutdown-timeout", str(shutdown_timeout)]
    child_args += ["--loop", loop, *(["--dry-run"] if dry_run else [])]
    for flag, value in (("--queue", queue), ("--exchange", exchange)):
        if value is not None:
            child_args += [flag, value]
    options = ServeOptions(
        config_path=path,
        broker_url=broker_url,
        queue=queue,
        exchange=exchange,
        http=None if http.lower() == "off" else http,
        shutdown_timeout=shutdown_timeout,
        watch=not no_watch,
        dry_run=dry_run,
        workers=processes if worker_index is None else 1,
        worker_args=tuple(child_args),
        worker_index=worker_index,
        worker_socket=worker_socket,
        worker_env={BROKER_ENV: broker_url} if broker_url is not None else {},
    )
    from router.transports import TransportError

    loop_factory = event_loop_factory(loop)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run_server(options))
    except ConfigError as error:
        fail(format_config_error(error))
    except WorkersFailed as error:
        fail(f"stopped: {error}", code=1)
    except TransportError as error:  # its message names the broker or file, never a password
        fail(f"could not start: {scrub_error(error)}")
    except (OSError, ConnectionError, ValueError) as error:  # ValueError: an unusable URL or address
        fail(f"could not start: {type(error).__name__}: {scrub_error(error)}")


def event_loop_factory(choice: str) -> Callable[[], Any] | None:
    """The loop factory for ``--loop``: uvloop's when asked for or, for ``auto``, when installed.

    uvloop runs the same code with less overhead per task, callback and socket operation,
    which is most of the router's cost per event (see bench/README.md); None is asyncio's own.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            fail("--loop uvloop: uvloop is not installed (pip install uvloop)")
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def scrub_error(error: BaseException) -> str:
    """An exception's text with URL credentials removed."""
    import re

    return re.sub(r"://[^/@\s]+@", "://***@", str(error))


@cli.command()
@click.argument("event_type")
@click.option("--data", "data_json", help="Event data as a JSON object.")
@click.option(
    "--file", "data_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the data from a JSON file."
)
@click.option("--source", default="router-cli", show_default=True, help="The event's source.")
@click.option(
    "--id",
    "event_id",
    help="The event's id (default: a new UUID). Publishing the same id again delivers nothing twice.",
)
@click.option("--subject", help="The event's subject (CloudEvents), e.g. user/42.")
@click.option(
    "--http",
    "http_url",
    default=None,
    envvar="ROUTER_HTTP",
    show_envvar=True,
    help="The embedded router's address, HOST:PORT or a URL, as given to `router serve --http`"
    " (default 127.0.0.1:8080); used when no broker is configured.",
)
@click.option("--broker", "broker_url", help="Broker URL (amqp://...); overrides rules.yaml.")
@click.option("--exchange", help="RabbitMQ exchange to publish to; overrides broker.exchange.")
@config_option
def publish(
    event_type: str,
    data_json: str | None,
    data_file: Path | None,
    source: str,
    event_id: str | None,
    subject: str | None,
    http_url: str | None,
    broker_url: str | None,
    exchange: str | None,
    config_path: Path | None,
) -> None:
    """Publish an event of EVENT_TYPE and print its id.

    Goes to RabbitMQ (confirmed) when a broker is configured, else to the embedded router's
    POST /events.
    """
    import asyncio

    from router.ingest.publish_command import PublishError, publish_event

    if data_json is not None and data_file is not None:
        fail("give --data or --file, not both")
    data: object = {}
    if data_json is not None:
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as error:
            fail(f"--data is not valid JSON: {error.msg} at column {error.colno}")
    elif data_file is not None:
        data, _ = read_json_file(data_file, "data file")
    if not isinstance(data, dict):
        fail("event data must be a JSON object")
    runtime = load_runtime(config_path)
    url = broker_url if broker_url is not None else runtime.config.broker.url
    broker = runtime.config.broker
    if exchange is not None:
        broker = broker.model_copy(update={"exchange": exchange})
    try:
        published = asyncio.run(
            publish_event(
                event_type,
                data,
                source=source,
                broker=broker,
                broker_url=url,
                http_url=http_url,
                ingest_auth=runtime.config.ingest.auth,  # the token or secret `router serve` requires
                id=event_id,
                subject=subject,
            )
        )
    except PublishError as error:
        fail(str(error))
    click.echo(published)


@cli.group()
def dlq() -> None:
    """Inspect and manage the dead-letter queue."""


def _open_dlq_transport(config_path: Path | None, broker_url: str | None) -> Any:
    from router.app.server import install_record_keys
    from router.transports import open_transport

    runtime = load_runtime(config_path)
    try:
        install_record_keys(runtime)  # replayed records are verified, then signed again
    except ConfigError as error:
        fail(format_config_error(error))
    broker = runtime.config.broker
    if broker_url is not None:
        broker = broker.model_copy(update={"url": broker_url})
    return open_transport(broker)


def _run_dlq(config_path: Path | None, broker_url: str | None, action: Callable[[Any], Any]) -> Any:
    import asyncio

    async def run() -> Any:
        transport = _open_dlq_transport(config_path, broker_url)
        try:
            await transport.connect()
        except Exception as error:
            fail(f"cannot connect to the broker: {type(error).__name__}: {scrub_error(error)}")
        try:
            return await action(transport)
        finally:
            await transport.close()

    return asyncio.run(run())


@dlq.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with bodies).")
@click.option("--limit", default=100, show_default=True, help="Show at most this many.")
@click.option("--broker", "broker_url", help="Broker URL; overrides rules.yaml.")
@config_option
def dlq_list(as_json: bool, limit: int, broker_url: str | None, config_path: Path | None) -> None:
    """List dead letters: id, time, reason, rule/channel, event id, attempts, last error."""
    from router.engine.dlq import format_letters, letter_as_dict

    letters = _run_dlq(config_path, broker_url, lambda t: t.dlq_list(limit))
    if as_json:
        click.echo(json.dumps([letter_as_dict(x, include_body=True) for x in letters], indent=2, default=str))
        return
    if not letters:
        click.echo("dead-letter queue is empty")
        return
    for line in format_letters(letters):
        click.echo(line)


@dlq.command(name="replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.option("--broker", "broker_url", help="Broker URL; overrides rules.yaml.")
@config_option
def dlq_replay(ids: tuple[str, ...], replay_all: bool, broker_url: str | None, config_path: Path | None) -> None:
    """Send dead letters IDS (or --all) through the router again, with fresh attempts."""
    from router.engine.dlq import replay

    if bool(ids) == replay_all:
        fail("give dead-letter IDS or --all")
    from router.core.signing import ForgedRecord

    try:
        letters = _run_dlq(config_path, broker_url, lambda t: replay(t, None if replay_all else list(ids)))
    except ForgedRecord as error:
        fail(f"{error} (inspect it with `router dlq list --json`; `router dlq purge` removes it)", code=1)
    missing = sorted(set(ids) - {x.id for x in letters})
    click.echo(f"replayed {len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
    if missing:
        fail(f"not found: {', '.join(missing)}", code=1)


@dlq.command(name="purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--broker", "broker_url", help="Broker URL; overrides rules.yaml.")
@config_option
def dlq_purge(yes: bool, broker_url: str | None, config_path: Path | None) -> None:
    """Delete every dead letter."""
    if not yes and not click.confirm("Delete every dead letter?", default=False):
        fail("aborted", code=1)
    count = _run_dlq(config_path, broker_url, lambda t: t.dlq_purge())
    click.echo(f"purged {count} dead letter{'s' if count != 1 else ''}")


# ----------------------------------------------------------------- activity (docs/activity.md)


def _activity_store(config_path: Path | None) -> Any:
    """The activity store rules.yaml names (read directly; `--url` uses a running router's API instead)."""
    from router.activity.query import FilterError, activity_url, open_store

    runtime = load_runtime(config_path)
    config = runtime.config.activity
    if not config.enabled:
        fail("activity is off in this configuration (activity: false)")
    folder = runtime.loaded.path.parent
    try:
        return open_store(activity_url(config, folder), folder)
    except FilterError as error:
        fail(str(error))


def _activity_read(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    path: str,
    params: dict[str, Any],
    read: Callable[[Any], Any],
) -> Any:
    from router.activity.query import FilterError
    from router.activity.view import ApiError, api_call

    if url:
        try:
            return api_call(url, path, token=token, params=params)
        except ApiError as error:
            fail(str(error))
    store = _activity_store(config_path)
    try:
        return read(store)
    except FilterError as error:
        fail(str(error))
    except Exception as error:
        fail(f"cannot read the activity store ({store.describe()}): {type(error).__name__}")
    finally:
        store.close()


def _activity_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--since", default="1h", show_default=True, help="How far back (15m, 1h, 7d) or an ISO 8601 time."
            ),
            click.option("--until", default=None, help="Up to (a duration back from now, or an ISO 8601 time)."),
            click.option("--type", "event_type", default=None, help="Event type ('*' matches within a segment)."),
            click.option("--rule", default=None, help="Only events this rule decided on."),
            click.option("--channel", default=None, help="Only events delivered (or not) to this channel."),
            click.option(
                "--outcome",
                # records.OUTCOMES, written out: importing it here would slow every command's start.
                type=click.Choice(["sent", "failed", "dead", "skipped", "pending", "dry_run", "rejected"]),
                default=None,
                help="Only events with this outcome (failed: at least one failed attempt; rejected: "
                "never routed: undecodable, oversize, failing its schema or a forged retry record).",
            ),
            click.option("-q", "--query", "q", default=None, help="An event id, or a subject prefix."),
            click.option("--url", default=None, help="Use the JSON API of a running router (http://host:port)."),
            click.option("--token", envvar="ROUTER_UI_TOKEN", default=None, help="Bearer token for --url (ui.auth)."),
            config_option,
        ]
    ):
        func = option(func)
    return func


@cli.command()
@_activity_options
@click.option("--limit", default=50, show_default=True, help="Show at most this many (at most 500).")
@click.option("--before", default=None, help="The cursor printed under the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/activity answer (docs/activity.schema.json).")
def activity(
    since: str,
    until: str | None,
    event_type: str | None,
    rule: str | None,
    channel: str | None,
    outcome: str | None,
    q: str | None,
    url: str | None,
    token: str | None,
    config_path: Path | None,
    limit: int,
    before: str | None,
    as_json: bool,
) -> None:
    """List recorded events: time, id, type, rules fired, outcome per channel."""
    from router.activity.query import parse_filter
    from router.activity.view import format_table

    params = {"since": since, "until": until, "type": event_type, "rule": rule, "channel": channel}
    params |= {"outcome": outcome, "q": q, "limit": str(limit), "before": before}
    given = {k: v for k, v in params.items() if v}
    answer = _activity_read(
        config_path, url, token, "/api/activity", given, lambda store: store.list_events(parse_filter(given))
    )
    click.echo(json.dumps(answer, indent=2) if as_json else format_table(answer))


@cli.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/events/{id} answer.")
@click.option("--url", default=None, help="Use the JSON API of a running router (http://host:port).")
@click.option("--token", envvar="ROUTER_UI_TOKEN", default=None, help="Bearer token for --url (ui.auth).")
@config_option
def trace(event_id: str, as_json: bool, url: str | None, token: str | None, config_path: Path | None) -> None:
    """One event's timeline: received, schema, each rule's verdict, every attempt, the outcome."""
    from urllib.parse import quote

    from router.activity.view import format_trace

    story = _activity_read(
        config_path,
        url,
        token,
        f"/api/events/{quote(event_id, safe='')}",
        {},
        lambda store: store.event_story(event_id),
    )
    if story is None:
        fail(f"no activity recorded for event {event_id!r}", code=1)
    if not url:  # the API adds them itself
        from router.app.story import with_not_matched

        story = with_not_matched(story, load_runtime(config_path))
    click.echo(json.dumps(story, indent=2) if as_json else format_trace(story))


@cli.command()
@_activity_options
@click.option("--yes", is_flag=True, help="Replay; without it, only list what would be replayed.")
@click.option("--broker", "broker_url", help="Broker URL; overrides rules.yaml.")
def replay(
    since: str,
    until: str | None,
    event_type: str | None,
    rule: str | None,
    channel: str | None,
    outcome: str | None,
    q: str | None,
    url: str | None,
    token: str | None,
    config_path: Path | None,
    yes: bool,
    broker_url: str | None,
) -> None:
    """Replay the deliveries that did not succeed of the events matching a filter (default --outcome dead)."""
    from router.activity.api import MAX_REPLAY, matching_ids
    from router.activity.query import parse_filter
    from router.engine.dlq import replay_events

    if url:
        fail("router replay reads the store and the dead-letter queue directly: run it without --url")
    params = {"since": since, "until": until, "type": event_type, "rule": rule, "channel": channel}
    params |= {"outcome": outcome or "dead", "q": q}
    given = {k: v for k, v in params.items() if v}
    ids: list[str] = _activity_read(
        config_path, None, None, "", given, lambda store: matching_ids(store, parse_filter(given), MAX_REPLAY)
    )
    if not ids:
        click.echo("nothing to replay")
        return
    for event_id in ids[:50]:
        click.echo(event_id)
    if len(ids) > 50:
        click.echo(f"... and {len(ids) - 50} more")
    if not yes:
        click.echo(f"{len(ids)} event(s) would be replayed; run again with --yes")
        return

    def progress(done: int, total: int) -> None:
        click.echo(f"replayed {done}/{total} dead letters", err=True)

    result = _run_dlq(config_path, broker_url, lambda t: replay_events(t, ids, progress))
    click.echo(
        f"replayed {result['replayed']} dead letter(s) of {len(ids)} event(s); "
        f"{result['skipped']} event(s) had none left"
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="router")


if __name__ == "__main__":
    main()
