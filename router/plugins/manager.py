"""The plugin manager: loads the built-ins and installed plugins, builds the registry, runs event hooks.

Plugins are pluggy plugins of project ``router``, found through entry points of group
``router`` (see docs/plugins.md). Built-in channels, the ``notify`` job and the built-in
filters go through the same hooks, registered as the default plugin ``router.plugins.defaults``.

A plugin never takes the router down: one that fails to import, or raises while registering,
is recorded in :attr:`router.plugins.registry.PluginInfo.error` and skipped; one that raises in an
event hook is logged with its name and the event goes on without it.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pluggy
from pluggy import HookImpl
from pydantic import BaseModel

from router.channels.base import Channel, ChannelConfig
from router.config.channel_options import redefined_common_options
from router.core.delivery import Delivery
from router.core.events import Event
from router.core.message import Message, Outcome
from router.core.suggest import did_you_mean
from router.jobs.base import Job
from router.plugins import hookspecs
from router.plugins.registry import PluginInfo, Registry
from router.support.isolation import is_router_cancellation

PROJECT = "router"
ENTRY_POINT_GROUP = "router"
BUILTINS_NAME = "router.builtins"
LOAD_PLUGINS_ENV = "ROUTER_LOAD_PLUGINS"

log = logging.getLogger("router.plugins")

HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, f"{PROJECT}_spec")
)
"""Every hook declared in :mod:`router.plugins.hookspecs`, in declaration order."""

_FILTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a registered plugin came from, for :class:`PluginInfo`."""

    label: str  # the name `router plugins` shows (distribution name for packages)
    version: str | None
    source: str  # "built-in" or "package"


class RouterPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from and which failed to load."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, _Origin] = {}
        self.load_failures: list[PluginInfo] = []
        # Bumped on every (un)registration so cached hook lists know when to refresh.
        self.generation = 0
        self.hooks: Hooks | None = None  # built on first use by the call_* helpers

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        self.generation += 1
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self.generation += 1
        return removed


def get_plugin_manager(*, load_entry_points: bool = True) -> RouterPluginManager:
    """A plugin manager with the built-ins and (unless told not to) every installed plugin.

    ``ROUTER_LOAD_PLUGINS="a,b"`` limits the installed plugins to those whose distribution or
    entry-point name is listed; an empty value loads none. Built-ins always load.
    """
    from router.core.version import __version__
    from router.plugins import defaults as builtins

    pm = RouterPluginManager()
    pm.register(builtins, name=BUILTINS_NAME)
    pm.origins[BUILTINS_NAME] = _Origin(BUILTINS_NAME, __version__, "built-in")
    if load_entry_points:
        _load_entry_points(pm, _allowed_plugins())
    _warn_unknown_hooks(pm)
    return pm


def _normalise(name: str) -> str:
    # Distribution names compare as PEP 503 says: case and runs of -_. do not matter.
    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed_plugins() -> set[str] | None:
    """The names ROUTER_LOAD_PLUGINS allows, or None when it is unset (load everything)."""
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {_normalise(part.strip()) for part in raw.split(",") if part.strip()}


def _load_entry_points(pm: RouterPluginManager, allowed: set[str] | None) -> None:
    if allowed is not None and not allowed:
        return  # ROUTER_LOAD_PLUGINS='': nothing to load, and scanning every distribution's metadata is not free
    # Sorted so that load order, and so which of two clashing names wins, is the same everywhere.
    entry_points = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (_normalise(ep.dist.name) if ep.dist is not None else "", ep.name),
    )
    per_dist: dict[str, int] = {}
    for ep in entry_points:
        dist_name = ep.dist.name if ep.dist is not None else None
        per_dist[dist_name or ep.name] = per_dist.get(dist_name or ep.name, 0) + 1

    seen: set[str] = set()
    for ep in entry_points:
        dist = ep.dist
        dist_name = dist.name if dist is not None else None
        names = {_normalise(ep.name)} | ({_normalise(dist_name)} if dist_name else set())
        seen |= names
        if allowed is not None and not names & allowed:
            continue
        # One entry point per distribution is the norm: show the distribution's name then.
        label = dist_name or ep.name
        if per_dist[label] > 1:
            label = f"{label}:{ep.name}"
        version = dist.version if dist is not None else None
        if pm.has_plugin(label):
            # The same distribution found twice on sys.path (e.g. an editable and a normal install).
            log.warning("plugin %r is installed more than once; using the first one found", label)
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=label)
        except Exception as exc:  # a broken plugin is reported, never fatal
            reason = _short_error(exc)
            log.error("plugin %r failed to load: %s", label, reason)
            pm.load_failures.append(PluginInfo(name=label, version=version, source="package", error=reason))
            continue
        pm.origins[label] = _Origin(label, version, "package")

    if allowed:
        for missing in sorted(allowed - seen):
            log.warning("%s names %r but no installed plugin has that name", LOAD_PLUGINS_ENV, missing)


def _warn_unknown_hooks(pm: pluggy.PluginManager) -> None:
    # pluggy accepts implementations of hooks nobody declared; a typo would silently do nothing.
    for name, plugin in pm.list_name_plugin():
        for caller in pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                hint = did_you_mean(caller.name, HOOK_NAMES)
                log.warning("plugin %r implements unknown hook %r%s; it is never called", name, caller.name, hint)


_MAX_ERROR = 300


def _short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, capped: what `router plugins` shows for a failure."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > _MAX_ERROR:
        text = text[: _MAX_ERROR - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- the registry -------------------------------------------------------------------------


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every plugin's ``register_*`` hooks and collect what they registered.

    Each plugin is called on its own: one that raises, or registers something invalid or
    already taken (the first registration wins), is reported in its :class:`PluginInfo` and
    the others still register.
    """
    if pm is None:
        pm = get_plugin_manager()
    registry = Registry()
    origins: dict[str, _Origin] = getattr(pm, "origins", {})

    infos: dict[str, PluginInfo] = {}
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        origin = origins.get(name, _Origin(name, None, "package"))
        implemented = {caller.name for caller in pm.get_hookcallers(plugin) or []}
        info = PluginInfo(
            name=origin.label,
            version=origin.version,
            source=origin.source,
            hooks=[hook for hook in HOOK_NAMES if hook in implemented] + sorted(implemented - set(HOOK_NAMES)),
        )
        infos[name] = info
        registry.plugins.append(info)

    # Plugins that failed to load come after those that loaded (built-ins stay first).
    registry.plugins.extend(getattr(pm, "load_failures", []))

    owners: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin that registered it
    _run_register_hook(pm, "register_channels", infos, lambda info: _ChannelCollector(registry, info, owners))
    _run_register_hook(pm, "register_jobs", infos, lambda info: _JobCollector(registry, info, owners))
    _run_register_hook(pm, "register_template_filters", infos, lambda info: _FilterCollector(registry, info, owners))
    return registry


def _abstract(cls: type) -> str:
    return ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))


def _add_error(info: PluginInfo, message: str) -> None:
    log.error("plugin %r: %s", info.name, message)
    info.error = message if not info.error else f"{info.error}; {message}"


class _Collector:
    """Stages one plugin's registrations from one hook call; committed only if the call returns."""

    kind = ""

    def __init__(self, registry: Registry, info: PluginInfo, owners: dict[tuple[str, str], str]) -> None:
        self.registry = registry
        self.info = info
        self.owners = owners
        self.staged: dict[str, Any] = {}

    def stage(self, name: str, value: Any) -> None:
        owner = self.owners.get((self.kind, name))
        if owner is not None or name in self.staged:
            by = f"'{owner}'" if owner else "this plugin"
            _add_error(self.info, f"{self.kind} '{name}' is already registered by {by}; ignoring this one")
            return
        self.staged[name] = value

    def commit(self) -> None:
        for name, value in self.staged.items():
            self.owners[(self.kind, name)] = self.info.name
            self.target()[name] = value
            self.names().append(name)

    def target(self) -> dict[str, Any]:
        raise NotImplementedError

    def names(self) -> list[str]:
        raise NotImplementedError


class _ChannelCollector(_Collector):
    kind = "channel type"

    def __call__(self, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            _add_error(self.info, f"register_channels: {cls!r} is not a subclass of router.Channel")
            return
        type_name = getattr(cls, "type_name", None)
        if not isinstance(type_name, str) or not type_name:
            _add_error(self.info, f"register_channels: {cls.__name__} does not set type_name")
            return
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, ChannelConfig)):
            _add_error(self.info, f"register_channels: {cls.__name__}.Config is not a router.ChannelConfig subclass")
            return
        if inspect.isabstract(cls):
            _add_error(self.info, f"register_channels: {cls.__name__} does not implement {_abstract(cls)}")
            return
        if conflicts := redefined_common_options(cls.Config):
            _add_error(
                self.info,
                f"register_channels: {cls.__name__}.Config changes options every channel accepts"
                f" ({'; '.join(conflicts)}); give the plugin's own option another name",
            )
            return
        self.stage(type_name, cls)

    def target(self) -> dict[str, Any]:
        return self.registry.channels

    def names(self) -> list[str]:
        return self.info.channels


class _JobCollector(_Collector):
    kind = "job"

    def __call__(self, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Job)):
            _add_error(self.info, f"register_jobs: {cls!r} is not a subclass of router.Job")
            return
        job_name = getattr(cls, "name", None)
        if not isinstance(job_name, str) or not job_name:
            _add_error(self.info, f"register_jobs: {cls.__name__} does not set name")
            return
        if not (isinstance(cls.With, type) and issubclass(cls.With, BaseModel)):
            _add_error(self.info, f"register_jobs: {cls.__name__}.With is not a pydantic model")
            return
        if inspect.isabstract(cls):
            _add_error(self.info, f"register_jobs: {cls.__name__} does not implement {_abstract(cls)}")
            return
        self.stage(job_name, cls)

    def target(self) -> dict[str, Any]:
        return self.registry.jobs

    def names(self) -> list[str]:
        return self.info.jobs


class _FilterCollector(_Collector):
    kind = "filter"

    def __call__(self, name: Any, function: Any = None) -> None:
        if not isinstance(name, str) or not _FILTER_NAME.match(name):
            _add_error(
                self.info, f"register_template_filters: {name!r} is not a valid filter name (a Python identifier)"
            )
            return
        if not callable(function):
            _add_error(self.info, f"register_template_filters: filter '{name}' is not callable")
            return
        self.stage(name, function)

    def target(self) -> dict[str, Any]:
        return self.registry.filters

    def names(self) -> list[str]:
        return self.info.filters


def _run_register_hook(
    pm: pluggy.PluginManager,
    hook_name: str,
    infos: dict[str, PluginInfo],
    make_collector: Callable[[PluginInfo], _Collector],
) -> None:
    impls = {impl.plugin_name: impl for impl in _impls(pm, hook_name)}
    # Registration order, not pluggy's call order: built-ins come first, so they win name clashes.
    for name, _plugin in pm.list_name_plugin():
        impl = impls.get(name)
        info = infos.get(name)
        if impl is None or info is None:
            continue
        collector = make_collector(info)
        try:
            _call_impl(impl, {"register": collector})
        except Exception as exc:
            log.exception("plugin %r raised in %s", info.name, hook_name)
            _add_error(info, f"{hook_name} raised {_short_error(exc)}")
            continue
        collector.commit()


def _impls(pm: pluggy.PluginManager, hook_name: str) -> list[HookImpl]:
    caller = getattr(pm.hook, hook_name, None)
    return list(caller.get_hookimpls()) if caller is not None else []


def _call_impl(impl: HookImpl, kwargs: dict[str, Any]) -> Any:
    # pluggy lets an implementation accept a subset of the spec's arguments.
    return impl.function(*[kwargs[arg] for arg in impl.argnames])


# --- event hooks ----------------------------------------------------------------------------


def _call_order(pm: pluggy.PluginManager, hook_name: str) -> tuple[HookImpl, ...]:
    """The implementations of an event hook in pluggy's call order (last registered first)."""
    ordered: list[HookImpl] = []
    for impl in reversed(_impls(pm, hook_name)):
        if impl.hookwrapper or impl.wrapper:
            log.warning("plugin %r: %s as a hook wrapper is not supported; ignored", impl.plugin_name, hook_name)
            continue
        ordered.append(impl)
    return tuple(ordered)


class _LabelledCounter(Protocol):
    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any: ...


class HookMetrics(Protocol):
    """What :class:`Hooks` counts into: a counter of failing implementations, labelled ``plugin``."""

    @property
    def plugin_errors(self) -> _LabelledCounter: ...


class Hooks:
    """The per-event hooks of a plugin manager, with cached implementation lists.

    Build one per plugin manager and keep it: with no plugin implementing a hook, calling it
    costs one attribute check (and ``has_<hook>`` lets a caller skip even the await). With
    ``metrics``, every implementation that raises (or returns something unusable) is counted
    in ``metrics.plugin_errors`` under its plugin's name.
    """

    def __init__(self, pm: pluggy.PluginManager, *, metrics: HookMetrics | None = None) -> None:
        self.pm = pm
        self.metrics = metrics
        self._generation: int | None = None
        self._refresh()

    def _refresh(self) -> None:
        self._generation = getattr(self.pm, "generation", None)
        self._event_received = _call_order(self.pm, "event_received")
        self._before_delivery = _call_order(self.pm, "before_delivery")
        self._delivery_finished = _call_order(self.pm, "delivery_finished")

    def _check(self) -> None:
        # A RouterPluginManager counts registrations; a plain pluggy manager is snapshotted once.
        if self._generation is not None and self._generation != getattr(self.pm, "generation", None):
            self._refresh()

    @property
    def has_event_received(self) -> bool:
        self._check()
        return bool(self._event_received)

    @property
    def has_before_delivery(self) -> bool:
        self._check()
        return bool(self._before_delivery)

    @property
    def has_delivery_finished(self) -> bool:
        self._check()
        return bool(self._delivery_finished)

    def _failed(self, impl: HookImpl) -> None:
        if self.metrics is not None:
            self.metrics.plugin_errors.labels(plugin=impl.plugin_name).inc()

    async def _invoke(self, impl: HookImpl, hook_name: str, kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """Call one implementation, sync or async; (False, None) when it raised (logged and counted)."""
        try:
            result = _call_impl(impl, kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as error:
            # CancelledError, SystemExit, ... from plugin code fail the hook like any exception.
            if is_router_cancellation(error):
                raise
            log.error(
                "plugin %r raised in %s; skipped",
                impl.plugin_name,
                hook_name,
                exc_info=(type(error), error, error.__traceback__),
            )
            self._failed(impl)
            return False, None
        return True, result

    async def event_received(self, event: Event) -> Event:
        """Pass ``event`` through every ``event_received`` implementation; returns the (possibly replaced) event."""
        self._check()
        for impl in self._event_received:
            ok, result = await self._invoke(impl, "event_received", {"event": event})
            if not ok or result is None:
                continue
            if isinstance(result, Event):
                event = result
            else:
                log.error(
                    "plugin %r: event_received returned %s, not an Event or None; ignored",
                    impl.plugin_name,
                    type(result).__name__,
                )
                self._failed(impl)
        return event

    async def before_delivery(self, delivery: Delivery) -> None:
        """Let every ``before_delivery`` implementation inspect or change ``delivery.message``."""
        self._check()
        for impl in self._before_delivery:
            message = delivery.message
            await self._invoke(impl, "before_delivery", {"delivery": delivery})
            if not isinstance(delivery.message, Message):
                # The channel could not send it: undo this plugin's change rather than fail the delivery.
                log.error(
                    "plugin %r: before_delivery set delivery.message to %s, not a router.Message; undone",
                    impl.plugin_name,
                    type(delivery.message).__name__,
                )
                self._failed(impl)
                delivery.message = message

    async def delivery_finished(self, delivery: Delivery, outcome: Outcome) -> None:
        """Tell every ``delivery_finished`` implementation how a delivery attempt ended."""
        self._check()
        for impl in self._delivery_finished:
            await self._invoke(impl, "delivery_finished", {"delivery": delivery, "outcome": outcome})


def _hooks_for(pm: pluggy.PluginManager) -> Hooks:
    if not isinstance(pm, RouterPluginManager):
        return Hooks(pm)  # a plain pluggy manager cannot tell us when to refresh: no cache
    if pm.hooks is None:
        pm.hooks = Hooks(pm)
    return pm.hooks


async def call_event_received(pm: pluggy.PluginManager, event: Event) -> Event:
    """Run the ``event_received`` hooks; returns the event to match (the original or a plugin's replacement)."""
    return await _hooks_for(pm).event_received(event)


async def call_before_delivery(pm: pluggy.PluginManager, delivery: Delivery) -> None:
    """Run the ``before_delivery`` hooks on ``delivery`` (they may replace its message)."""
    await _hooks_for(pm).before_delivery(delivery)


async def call_delivery_finished(pm: pluggy.PluginManager, delivery: Delivery, outcome: Outcome) -> None:
    """Run the ``delivery_finished`` hooks."""
    await _hooks_for(pm).delivery_finished(delivery, outcome)
