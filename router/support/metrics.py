"""Prometheus metrics of one router process.

Label values are bounded: channel and rule names come from the configuration, outcomes and
reasons from small fixed sets; never event ids or raw event types.

The metric classes are small lock-free stand-ins for prometheus_client's Counter, Gauge and
Histogram, because the engine updates metrics several times per event and prometheus_client
takes a lock on every update (one per bucket walked in a histogram). Only the event loop
thread updates metrics: no router code touching them runs in the SQLite worker, the embedded
queue's worker or the reload's ``build_runtime`` thread. A value is therefore a plain float.
A scrape may come from any thread; it copies each child dict and bucket list before reading,
and, like prometheus_client, does not freeze all series at one instant.

Each metric is a collector in :attr:`Metrics.registry`, so ``generate_latest``, the HTTP
``/metrics`` endpoint and ``registry.get_sample_value`` see exactly what prometheus_client's
own classes would export for the same updates: names, help, types, labels, buckets, and no
``*_created`` series. Exemplars, ``remove`` and ``time()`` are not supported; nothing uses them.
"""

from __future__ import annotations

import contextlib
import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# (name suffix, extra labels, value) of one exported sample.
_Sample = tuple[str, dict[str, str], float]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class CounterValue:
    """One counter series."""

    __slots__ = ("_v",)

    def __init__(self) -> None:
        self._v = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._v += amount

    def get(self) -> float:
        """The current value."""
        return self._v

    @property
    def _value(self) -> CounterValue:
        # prometheus_client's spelling: tests read ``metric.labels(...)._value.get()``.
        return self

    def _samples(self) -> list[_Sample]:
        return [("_total", {}, self._v)]


class GaugeValue:
    """One gauge series."""

    __slots__ = ("_v",)

    def __init__(self) -> None:
        self._v = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        self._v += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""
        self._v -= amount

    def set(self, value: float) -> None:
        """Set the value."""
        self._v = float(value)

    def get(self) -> float:
        """The current value."""
        return self._v

    @property
    def _value(self) -> GaugeValue:
        return self

    def _samples(self) -> list[_Sample]:
        return [("", {}, self._v)]


class _Buckets:
    """Upper bounds of a histogram's buckets (+Inf last) and their ``le`` label values."""

    def __init__(self, buckets: Sequence[float | str]) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != math.inf:
            bounds.append(math.inf)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.bounds = tuple(bounds)
        self.les = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]


class HistogramValue:
    """One histogram series: a count per bucket (not cumulative), summed up at scrape time."""

    __slots__ = ("_bounds", "_buckets", "_counts", "_sum")

    def __init__(self, buckets: _Buckets) -> None:
        self._buckets = buckets
        self._bounds = buckets.bounds
        self._counts = [0] * len(buckets.bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        """Record one observation."""
        self._sum += amount
        if amount == amount:  # NaN falls in no bucket, as with prometheus_client
            # The first bound >= amount; the last bound is +Inf, so the index is in range.
            self._counts[bisect_left(self._bounds, amount)] += 1

    def _samples(self) -> list[_Sample]:
        counts = list(self._counts)
        total = self._sum
        samples: list[_Sample] = []
        cumulative = 0.0
        for le, count in zip(self._buckets.les, counts, strict=True):
            cumulative += count
            samples.append(("_bucket", {"le": le}, cumulative))
        samples.append(("_count", {}, cumulative))
        if self._bounds[0] >= 0:  # prometheus_client leaves _sum out when buckets go negative
            samples.append(("_sum", {}, total))
        return samples


class _Series(Protocol):
    def _samples(self) -> list[_Sample]: ...


S = TypeVar("S", bound=_Series)


class _Family:
    """A metric family as a prometheus_client collector."""

    _type: ClassVar[str]
    _reserved_labels: ClassVar[tuple[str, ...]] = ()
    _name: str
    _documentation: str
    _labelnames: tuple[str, ...]

    def _register(
        self, name: str, documentation: str, labelnames: Iterable[str], registry: CollectorRegistry | None
    ) -> None:
        if self._type == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]  # as prometheus_client: the family is named without it
        names = tuple(labelnames)
        for label in names:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label in self._reserved_labels:
                raise ValueError(f"Invalid label metric name: {label}")
        self._name = name
        self._documentation = documentation
        self._labelnames = names
        self.describe()  # Metric() checks the name
        if registry is not None:
            registry.register(self)

    def _series(self) -> Iterable[tuple[tuple[str, ...], _Series]]:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        """The family without samples (for the registry's duplicate check)."""
        return [Metric(self._name, self._documentation, self._type)]

    def collect(self) -> list[Metric]:
        """The family and its samples, as prometheus_client's class of the same type builds them."""
        metric = Metric(self._name, self._documentation, self._type)
        for values, series in self._series():
            labels = dict(zip(self._labelnames, values, strict=True))
            for suffix, extra, value in series._samples():
                metric.add_sample(self._name + suffix, {**labels, **extra}, value)
        return [metric]


class Counter(CounterValue, _Family):
    """A counter without labels."""

    _type = "counter"

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self._register(name, documentation, (), registry)

    def _series(self) -> Iterable[tuple[tuple[str, ...], _Series]]:
        return [((), self)]


class Gauge(GaugeValue, _Family):
    """A gauge without labels."""

    _type = "gauge"

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self._register(name, documentation, (), registry)

    def _series(self) -> Iterable[tuple[tuple[str, ...], _Series]]:
        return [((), self)]


class _Labelled(_Family, Generic[S]):
    """A family with labels: ``labels(...)`` gives the series for one set of label values."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, registry: CollectorRegistry | None = None
    ) -> None:
        if not labelnames:
            raise ValueError("a labelled metric needs label names")
        self._children: dict[tuple[str, ...], S] = {}
        # By the values as passed: label values come from small fixed sets (channel and rule
        # names, outcomes), so after the first call for each, labels() is one dict lookup.
        self._by_args: dict[tuple[object, ...], S] = {}
        self._register(name, documentation, labelnames, registry)

    def _new_series(self) -> S:
        raise NotImplementedError

    def labels(self, *values: object, **named: object) -> S:
        """The series for these label values (by position or by name), made on first use."""
        if not named:
            try:
                return self._by_args[values]
            except (KeyError, TypeError):  # first use, or a value that cannot be hashed
                pass
        return self._labels(values, named)

    def _labels(self, values: tuple[object, ...], named: dict[str, object]) -> S:
        names = self._labelnames
        if named:
            if values:
                raise ValueError("Can't pass both *args and **kwargs")
            if sorted(named) != sorted(names):
                raise ValueError("Incorrect label names")
            key = tuple(str(named[name]) for name in names)
        else:
            if len(values) != len(names):
                raise ValueError("Incorrect label count")
            key = tuple(str(value) for value in values)
        series = self._children.get(key)
        if series is None:
            series = self._children[key] = self._new_series()
        if not named:
            with contextlib.suppress(TypeError):  # not hashable: looked up by its text each time
                self._by_args[values] = series
        return series

    def _series(self) -> Iterable[tuple[tuple[str, ...], _Series]]:
        return self._children.copy().items()  # copied at once: the loop may add a child meanwhile


class LabelledCounter(_Labelled[CounterValue]):
    """A counter with labels."""

    _type = "counter"

    def _new_series(self) -> CounterValue:
        return CounterValue()


class LabelledGauge(_Labelled[GaugeValue]):
    """A gauge with labels."""

    _type = "gauge"

    def _new_series(self) -> GaugeValue:
        return GaugeValue()


class LabelledHistogram(_Labelled[HistogramValue]):
    """A histogram with labels."""

    _type = "histogram"
    _reserved_labels = ("le",)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float | str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._buckets = _Buckets(buckets)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_series(self) -> HistogramValue:
        return HistogramValue(self._buckets)


class Metrics:
    """Every metric the router exports, in its own registry (so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = LabelledCounter(
            "router_events_received", "Messages taken from the transport.", ["kind"], registry=r
        )
        self.events_decoded = Counter("router_events_decoded", "Events decoded successfully.", registry=r)
        self.events_failed = LabelledCounter(
            "router_events_failed", "Events that could not be processed, by reason.", ["reason"], registry=r
        )
        self.events_requeued = Counter(
            "router_events_requeued", "Events returned to the queue because resolution failed.", registry=r
        )
        self.rules_matched = LabelledCounter("router_rules_matched", "Rules fired, by rule.", ["rule"], registry=r)
        self.deliveries = LabelledCounter(
            "router_deliveries", "Delivery attempts by channel and outcome.", ["channel", "outcome"], registry=r
        )
        self.delivery_latency = LabelledHistogram(
            "router_delivery_latency_seconds",
            "Time spent in a channel's send.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries_scheduled = LabelledCounter(
            "router_retries_scheduled", "Retries scheduled, by channel.", ["channel"], registry=r
        )
        self.dead_letters = LabelledCounter(
            "router_dead_letters", "Messages dead-lettered, by reason.", ["reason"], registry=r
        )
        self.failure_notifications = LabelledCounter(
            "router_failure_notifications",
            "Dead letters turned into on_failure notifications, by outcome: notified (one per notification "
            "channel), suppressed (a notification's own failure), render_error.",
            ["outcome"],
            registry=r,
        )
        self.dry_run = Gauge(
            "router_dry_run", "1 while dry run is on: deliveries are rendered and logged, nothing is sent.", registry=r
        )
        self.flow = LabelledCounter(
            "router_flow_decisions",
            "Flow-control decisions by rule: skipped (dedupe), dropped (rate_limit), delayed (throttle), collected (digest).",
            ["rule", "decision"],
            registry=r,
        )
        self.digests_flushed = LabelledCounter(
            "router_digests_flushed",
            "Batches scheduled for delivery: rule digests (digest) and channel summaries (fold).",
            ["kind"],
            registry=r,
        )
        self.pacing_wait = LabelledHistogram(
            "router_channel_pacing_wait_seconds",
            "Time a send waited in the process for its slot under the channel's rate limit.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.channel_folded = LabelledCounter(
            "router_channel_folded",
            "Deliveries folded into a summary message because the channel was saturated.",
            ["channel"],
            registry=r,
        )
        self.channel_deferred = LabelledCounter(
            "router_channel_deferred",
            "Deliveries put off as durable records to wait for the channel's rate limit or concurrency limit.",
            ["channel"],
            registry=r,
        )
        self.channel_rate_limited = LabelledCounter(
            "router_channel_rate_limited",
            "Answers asking to slow down (429 or Retry-After) that paused a channel for every process.",
            ["channel"],
            registry=r,
        )
        self.config_reloads = LabelledCounter(
            "router_config_reloads", "Configuration reloads, by result.", ["result"], registry=r
        )
        for result in ("success", "failure"):  # exported as 0 from the start, so rate() and alerts work
            self.config_reloads.labels(result)
        self.config_last_reload_ok = Gauge(
            "router_config_last_reload_successful", "1 if the last reload succeeded, 0 if it failed.", registry=r
        )
        self.config_last_reload_ok.set(1)
        self.in_flight = Gauge("router_events_in_flight", "Messages being processed.", registry=r)
        self.queue_depth = Gauge("router_queue_depth", "Events waiting in the queue, where known.", registry=r)
        self.activity_dropped = Counter(
            "router_activity_dropped",
            "Activity records dropped: the buffer was full or the activity store failed (deliveries go on).",
            registry=r,
        )
        self.activity_written = Counter(
            "router_activity_written", "Activity records written to the activity store.", registry=r
        )
        self.plugin_errors = LabelledCounter(
            "router_plugin_hook_errors", "Plugin hook implementations that raised.", ["plugin"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def merge_by_worker(expositions: Sequence[tuple[str, bytes]], *extra: CollectorRegistry) -> bytes:
    """One Prometheus text exposition of several processes' (``router serve --workers``).

    ``expositions`` are (worker number, text) pairs; each sample gets a ``worker`` label with
    its process's number, and a family appears once, with the samples of every process.
    ``extra`` registries (the parent's own supervision metrics) are added as they are.
    """
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for worker, text in expositions:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)

    class _Merged:
        def collect(self) -> Iterable[Metric]:
            yield from families.values()
            for registry in extra:
                yield from registry.collect()

    return generate_latest(_Merged())
