"""A loaded, fully validated configuration with everything built from it, ready to route.

A Runtime is immutable once built: a reload builds a new one and swaps it in, so work that
started on the old configuration finishes on it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from router.channels.base import Channel
from router.config.loader import LoadedConfig, load_config
from router.config.models import RouterConfig, Rule
from router.core.errors import ConfigError, Problem, TemplateError
from router.core.events import Event
from router.core.message import Message
from router.matching.index import RuleIndex
from router.plugins.registry import Registry
from router.support.disk_cache import cache_root
from router.templating import compile_workers as template_compile
from router.templating.field_checks import check_template_fields
from router.templating.templates import Templates, build_context


@dataclass
class Runtime:
    """Config + registry + compiled templates + rule index."""

    loaded: LoadedConfig
    registry: Registry
    templates: Templates
    index: RuleIndex
    rules_by_name: dict[str, Rule] = field(default_factory=dict)
    rule_positions: dict[str, int] = field(default_factory=dict)

    @property
    def config(self) -> RouterConfig:
        return self.loaded.config

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, if any."""
        return self.rules_by_name.get(name)

    def job_options(self, rule: Rule) -> BaseModel:
        """The validated ``with:`` options of ``rule``'s job."""
        return self.loaded.job_options[self.rule_positions[rule.name]]

    def channel_type(self, channel: str) -> str:
        """The channel type (``discord``, ``console``...) of the configured channel ``channel``."""
        return self.config.channels[channel].type

    def channel_class(self, channel: str) -> type[Channel]:
        return self.registry.channels[self.channel_type(channel)]

    def channel_enabled(self, channel: str) -> bool:
        return self.loaded.channel_configs[channel].enabled

    def render(
        self,
        rule: Rule,
        channel: str | None,
        event: Event,
        *,
        template: str | None = None,
        events: Sequence[Event] | None = None,
    ) -> Message:
        """Render ``rule``'s template (or ``template``) exactly as ``channel`` receives it.

        ``channel=None``: as no channel type sees it (no channel block, no channel limits); what
        a job of a rule without ``channels:`` gets from ``ctx.render()``. Raises TemplateError
        when the template fails.
        """
        name = template or rule.template
        if name is None:
            raise TemplateError(f"rule '{rule.name}' has no template to render")
        if channel is None:
            plain = self.templates.render(name, build_context(event, rule=rule, events=events))
            return Message(title=plain.title, body=plain.body, meta=message_meta(event, rule, ""))
        channel_type = self.channel_type(channel)
        channel_class = self.registry.channels[channel_type]
        context = build_context(
            event,
            rule=rule,
            channel={"name": channel, "type": channel_type, "markdown": channel_class.markdown},
            events=events,
        )
        rendered = self.templates.render(
            name,
            context,
            channel_type=channel_type,
            max_title=channel_class.max_title,
            max_body=channel_class.max_body,
            payload_model=channel_class.payload_model,
        )
        return Message(
            title=rendered.title, body=rendered.body, meta=message_meta(event, rule, channel), payload=rendered.payload
        )


def message_meta(event: Event, rule: Rule, channel: str) -> dict[str, Any]:
    """What channels that post structured payloads (webhook) send beside title and body."""
    return {
        "event_id": event.id,
        "event_type": event.type,
        "source": event.source,
        "rule": rule.name,
        "channel": channel,
    }


def build_runtime(path: str | Path, registry: Registry) -> Runtime:
    """Load and validate ``path``, compile every template and index the rules.

    Raises ConfigError listing every problem in the configuration and the templates.
    """
    with _gc_paused():
        return _build_runtime(path, registry)


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a configuration is built.

    A build allocates millions of long-lived objects (nodes, models, compiled code); each
    allocation burst triggers collections that scan all of them again, which was ~40% of the
    CPU time of loading 10,000 rules. What the build leaves unreachable in cycles is collected
    by the first collection after it. Builds may overlap (a reload in a thread): the collector
    comes back with the last one.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _build_runtime(path: str | Path, registry: Registry) -> Runtime:
    early = _start_templates_early(path, registry)
    try:
        loaded = load_config(path, registry)
        cache_dir = templates_cache(loaded)
        if early is not None and early.folder == loaded.templates_dir and early.cache_dir == cache_dir:
            templates, early = early, None  # the guess was right: compile_all joins the work started
        else:
            templates = Templates(loaded.templates_dir, registry.filters, cache_dir=cache_dir)
        # Indexed while template workers may still be compiling; its problems (which validation
        # finds first) are reported after the templates', as before.
        index: RuleIndex | ConfigError
        try:
            index = RuleIndex(loaded.config.rules)
        except ConfigError as exc:
            index = exc
        template_errors = templates.compile_all()
    finally:
        if early is not None:
            early.stop_compiling()
    if template_errors:
        raise ConfigError([template_problem(error) for error in template_errors])
    field_errors = check_template_fields(loaded.config, loaded.event_schemas, templates)
    if field_errors:  # a template reading a field its event's schema does not declare (a typo)
        raise ConfigError([template_problem(error) for error in field_errors])
    if isinstance(index, ConfigError):
        raise index
    return Runtime(
        loaded=loaded,
        registry=registry,
        templates=templates,
        index=index,
        rules_by_name={rule.name: rule for rule in loaded.config.rules},
        rule_positions={rule.name: i for i, rule in enumerate(loaded.config.rules)},
    )


# A top-level `templates: folder` line, in plain or quoted style (anything else is not guessed).
_TEMPLATES_KEY = re.compile(
    rb"""^templates:[ \t]*(?:"([^"\\$]*)"|'([^'$]*)'|([^\s"'#$&*!|>{\[][^\s#$]*))[ \t]*(?:#.*)?$""", re.M
)


def _start_templates_early(path: str | Path, registry: Registry) -> Templates | None:
    """Templates whose compiling starts before rules.yaml is loaded, in worker processes: a guess.

    A cold load of many templates spends most of its time compiling them, which forked workers
    can do while this process parses and validates rules.yaml. Which folder holds them is only
    known once rules.yaml is loaded, so this guesses it from a plain ``templates:`` line (or
    the default); the load uses these templates only when the guess was right. Workers start
    only when :mod:`router.templating.compile_workers` finds it worth it (many templates not in the
    cache); without them, this only reads the templates and the cache earlier than otherwise.
    """
    if not template_compile.fork_is_safe() or template_compile.available_cpus() < 2:
        return None
    try:
        file = Path(os.path.abspath(Path(path).expanduser()))
        with open(file, "rb") as stream:
            found = _TEMPLATES_KEY.search(stream.read())
        name: bytes = b"templates" if found is None else next(group for group in found.groups() if group is not None)
        folder = Path(os.path.abspath(file.parent / name.decode("utf-8")))
        if not name or not folder.is_dir():
            return None
        root = cache_root(file)
        templates = Templates(folder, registry.filters, cache_dir=root / "templates" if root is not None else None)
        templates.start_compiling()
    except Exception:  # only a guess: the load reports whatever is wrong
        return None
    return templates


def templates_cache(loaded: LoadedConfig) -> Path | None:
    """Where compiled templates are cached for this configuration (router.support.disk_cache), if anywhere."""
    root = cache_root(loaded.path)
    return root / "templates" if root is not None else None


def template_problem(error: TemplateError) -> Problem:
    """A template error as a located configuration problem."""
    return Problem(message=error.reason, file=error.template, line=error.line)
