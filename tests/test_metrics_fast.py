"""router.support.metrics exports exactly what prometheus_client's own classes export for the same updates.

Each test builds the router's metrics and, beside them, prometheus_client's Counter, Gauge and
Histogram with the same names, help, labels and buckets (and no ``*_created`` series, which
the router never exported), applies the same calls to both, and compares the exposition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import prometheus_client
import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from router.support.metrics import (
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    LabelledCounter,
    LabelledGauge,
    LabelledHistogram,
    Metrics,
)

# Label values that need escaping in the text format, or are not strings at all.
AWKWARD = ['quote " back \\ slash', "new\nline", "", "ünïcødé ✓", 7]
# Every bucket bound, values just either side of some, beyond the last, infinite, zero, negative.
OBSERVED = [*LATENCY_BUCKETS, 0.0, 1e-9, 0.0010000001, 0.0999, 0.3, 29.999, 30.0001, 1e6, math.inf, -0.5]


@pytest.fixture(autouse=True)
def _no_created_series(monkeypatch: pytest.MonkeyPatch) -> None:
    # The router never exported *_created; the reference must not either.
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", False)


def reference(metrics: Metrics) -> Any:
    """prometheus_client's classes with the same definitions as ``metrics``, in their own registry."""
    registry = CollectorRegistry()
    ref = SimpleNamespace(registry=registry)
    for attr, fast in vars(metrics).items():
        if attr != "registry":
            setattr(ref, attr, reference_of(fast, registry))
    # Metrics() does these at construction; the reference must start the same.
    ref.config_reloads.labels("success")
    ref.config_reloads.labels("failure")
    ref.config_last_reload_ok.set(1)
    return ref


def reference_of(fast: Any, registry: CollectorRegistry) -> Any:
    name, doc, labels = fast._name, fast._documentation, fast._labelnames
    if isinstance(fast, Counter | LabelledCounter):
        return prometheus_client.Counter(name, doc, labels, registry=registry)
    if isinstance(fast, Gauge | LabelledGauge):
        return prometheus_client.Gauge(name, doc, labels, registry=registry)
    assert isinstance(fast, LabelledHistogram)
    return prometheus_client.Histogram(name, doc, labels, buckets=fast._buckets.bounds, registry=registry)


def drive(m: Any) -> None:
    """Every metric of Metrics, through the calls the router makes (and a few more)."""
    for kind in ("event", "batch", "event"):
        m.events_received.labels(kind).inc()
    m.events_decoded.inc()
    m.events_decoded.inc(2)
    for value in AWKWARD:
        m.events_failed.labels(value).inc()
        m.rules_matched.labels(rule=value).inc(0.5)
        m.dead_letters.labels(value).inc()
    m.events_requeued.inc()
    m.deliveries.labels("a", "ok").inc()
    m.deliveries.labels(channel="a", outcome="ok").inc()
    m.deliveries.labels(outcome="retry", channel="b").inc()
    for channel in ("a", 'b"\\\n'):
        for seconds in OBSERVED:
            m.delivery_latency.labels(channel).observe(seconds)
            m.pacing_wait.labels(channel=channel).observe(seconds / 2)
    m.retries_scheduled.labels("job:notify").inc()
    m.failure_notifications.labels("notified").inc(3)
    m.failure_notifications.labels("suppressed").inc(0)
    m.dry_run.set(True)
    m.flow.labels("rule", "skipped").inc()
    m.digests_flushed.labels("fold").inc()
    m.channel_folded.labels("a").inc(4)
    m.channel_deferred.labels("a").inc()
    m.channel_rate_limited.labels("a").inc()
    m.config_reloads.labels("failure").inc()
    m.config_last_reload_ok.set(0)
    for _ in range(3):
        m.in_flight.inc()
    m.in_flight.dec()
    m.in_flight.inc(2.5)
    m.in_flight.dec(0.25)
    m.queue_depth.set(12)
    m.plugin_errors.labels(plugin="audit").inc()
    m.plugin_errors.labels("audit").inc()


def assert_same_exposition(fast: CollectorRegistry, ref: CollectorRegistry) -> None:
    assert generate_latest(fast).decode() == generate_latest(ref).decode()
    assert generate_openmetrics(fast).decode() == generate_openmetrics(ref).decode()


def test_a_fresh_router_exports_what_prometheus_client_would() -> None:
    metrics = Metrics()
    ref = reference(metrics)
    assert_same_exposition(metrics.registry, ref.registry)
    assert metrics.render() == generate_latest(ref.registry)
    assert b"_created" not in metrics.render()


def test_every_metric_driven_through_the_router_api_exports_what_prometheus_client_would() -> None:
    metrics = Metrics()
    ref = reference(metrics)
    drive(metrics)
    drive(ref)
    assert_same_exposition(metrics.registry, ref.registry)
    # The samples themselves too (values as floats, label dicts), as get_sample_value sees them.
    assert list(metrics.registry.collect()) == list(ref.registry.collect())
    text = metrics.render().decode()
    assert 'router_events_failed_total{reason="quote \\" back \\\\ slash"} 1.0' in text
    assert 'router_delivery_latency_seconds_bucket{channel="a",le="0.001"} 4.0' in text
    assert 'router_delivery_latency_seconds_bucket{channel="a",le="+Inf"} 24.0' in text
    assert 'router_delivery_latency_seconds_count{channel="a"} 24.0' in text


def test_values_read_back_as_with_prometheus_client() -> None:
    metrics = Metrics()
    ref = reference(metrics)
    drive(metrics)
    drive(ref)
    for name, labels in [
        ("router_events_received_total", {"kind": "event"}),
        ("router_deliveries_total", {"channel": "a", "outcome": "ok"}),
        ("router_plugin_hook_errors_total", {"plugin": "audit"}),
        ("router_events_in_flight", {}),
        ("router_delivery_latency_seconds_bucket", {"channel": "a", "le": "0.025"}),
        ("router_delivery_latency_seconds_sum", {"channel": "a"}),
        ("router_config_reloads_total", {"result": "success"}),
    ]:
        expected = ref.registry.get_sample_value(name, labels)
        assert expected is not None
        assert metrics.registry.get_sample_value(name, labels) == expected
    # Tests elsewhere read single series the way prometheus_client stores them.
    assert metrics.events_received.labels("event")._value.get() == ref.events_received.labels("event")._value.get() == 2
    assert metrics.in_flight._value.get() == ref.in_flight._value.get() == 4.25
    assert metrics.dry_run._value.get() == 1


def test_a_nan_observation_is_counted_in_the_sum_only_as_with_prometheus_client() -> None:
    metrics = Metrics()
    ref = reference(metrics)
    for m in (metrics, ref):
        m.delivery_latency.labels("a").observe(0.2)
        m.delivery_latency.labels("a").observe(math.nan)
        m.in_flight.set(math.nan)
    assert_same_exposition(metrics.registry, ref.registry)
    assert 'router_delivery_latency_seconds_count{channel="a"} 1.0' in metrics.render().decode()


@pytest.mark.parametrize(
    ("make_fast", "make_ref", "update"),
    [
        pytest.param(
            lambda r: Counter("jobs_total", "Jobs.\nSecond \\ line.", registry=r),
            lambda r: prometheus_client.Counter("jobs_total", "Jobs.\nSecond \\ line.", registry=r),
            lambda m: m.inc(1.5),
            id="counter named with _total, help to escape",
        ),
        pytest.param(
            lambda r: LabelledGauge("temp", "T.", ["room", "floor"], registry=r),
            lambda r: prometheus_client.Gauge("temp", "T.", ["room", "floor"], registry=r),
            lambda m: (m.labels("a", 1).set(3), m.labels(floor="1", room="a").dec(), m.labels("b", 2).inc()),
            id="labelled gauge",
        ),
        pytest.param(
            lambda r: LabelledHistogram("h", "H.", ["x"], buckets=(-1, 0, 1), registry=r),
            lambda r: prometheus_client.Histogram("h", "H.", ["x"], buckets=(-1, 0, 1), registry=r),
            lambda m: [m.labels("y").observe(v) for v in (-2, -1, -0.5, 0, 0.5, 1, 2)],
            id="histogram with negative buckets has no _sum",
        ),
        pytest.param(
            lambda r: LabelledHistogram("h2", "H.", ["x"], buckets=("0.5", 2, math.inf), registry=r),
            lambda r: prometheus_client.Histogram("h2", "H.", ["x"], buckets=("0.5", 2, math.inf), registry=r),
            lambda m: [m.labels("y").observe(v) for v in (0.5, 1, 2, 3)],
            id="histogram buckets given as text, +Inf given",
        ),
    ],
)
def test_families_outside_metrics_export_what_prometheus_client_would(
    make_fast: Callable[[CollectorRegistry], Any],
    make_ref: Callable[[CollectorRegistry], Any],
    update: Callable[[Any], object],
) -> None:
    fast_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    fast, ref = make_fast(fast_registry), make_ref(ref_registry)
    assert_same_exposition(fast_registry, ref_registry)
    update(fast)
    update(ref)
    assert_same_exposition(fast_registry, ref_registry)


def test_labels_gives_one_series_per_set_of_values_however_they_are_passed() -> None:
    metrics = Metrics()
    series = metrics.deliveries.labels("a", "ok")
    assert metrics.deliveries.labels(channel="a", outcome="ok") is series
    assert metrics.deliveries.labels(outcome="ok", channel="a") is series
    assert metrics.rules_matched.labels(7) is metrics.rules_matched.labels("7")
    unhashable = metrics.rules_matched.labels(["x"])
    assert metrics.rules_matched.labels(["x"]) is unhashable is metrics.rules_matched.labels("['x']")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.deliveries.labels("a"), id="too few values"),
        pytest.param(lambda m: m.deliveries.labels("a", "b", "c"), id="too many values"),
        pytest.param(lambda m: m.deliveries.labels(channel="a"), id="missing name"),
        pytest.param(lambda m: m.deliveries.labels(channel="a", outcome="b", extra="c"), id="unknown name"),
        pytest.param(lambda m: m.deliveries.labels("a", outcome="b"), id="positions and names"),
        pytest.param(lambda m: m.events_decoded.inc(-1), id="counter decremented"),
        pytest.param(lambda m: m.events_received.labels("event").inc(-0.5), id="labelled counter decremented"),
    ],
)
def test_misuse_raises_value_error_as_with_prometheus_client(call: Callable[[Any], object]) -> None:
    metrics = Metrics()
    ref = reference(metrics)
    with pytest.raises(ValueError):
        call(ref)
    with pytest.raises(ValueError):
        call(metrics)
    assert_same_exposition(metrics.registry, ref.registry)  # nothing counted, same series made


def test_a_name_registered_twice_is_refused_as_with_prometheus_client() -> None:
    registry = CollectorRegistry()
    LabelledCounter("router_x", "X.", ["a"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prometheus_client.Counter("router_x", "X.", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("router_x_total", "X.", registry=registry)
    with pytest.raises(ValueError):
        LabelledHistogram("router_h", "H.", ["le"], buckets=(1,), registry=registry)


def test_a_scrape_is_not_broken_by_a_series_added_while_it_reads() -> None:
    # /metrics may be rendered off the loop thread (an embedding application) while the loop
    # adds a series: the scrape reads a copy of the children, never the live dict.
    metrics = Metrics()
    metrics.deliveries.labels("a", "ok").inc()
    reading = iter(metrics.deliveries._series())
    next(reading)
    metrics.deliveries.labels("b", "ok").inc()
    assert list(reading) == []  # no "dictionary changed size during iteration"
    assert metrics.registry.get_sample_value("router_deliveries_total", {"channel": "b", "outcome": "ok"}) == 1
