"""Prometheus metrics of one router process.

Label values are bounded: channel and rule names come from the configuration, outcomes and
reasons from small fixed sets; never event ids or raw event types.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.metrics import MetricWrapperBase

# The *_created series double the number of series and carry nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric the router exports, in its own registry (so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "router_events_received", "Messages taken from the transport.", ["kind"], registry=r
        )
        self.events_decoded = Counter("router_events_decoded", "Events decoded successfully.", registry=r)
        self.events_failed = Counter(
            "router_events_failed", "Events that could not be processed, by reason.", ["reason"], registry=r
        )
        self.events_requeued = Counter(
            "router_events_requeued", "Events returned to the queue because resolution failed.", registry=r
        )
        self.rules_matched = Counter("router_rules_matched", "Rules fired, by rule.", ["rule"], registry=r)
        self.deliveries = Counter(
            "router_deliveries", "Delivery attempts by channel and outcome.", ["channel", "outcome"], registry=r
        )
        self.delivery_latency = Histogram(
            "router_delivery_latency_seconds",
            "Time spent in a channel's send.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries_scheduled = Counter(
            "router_retries_scheduled", "Retries scheduled, by channel.", ["channel"], registry=r
        )
        self.dead_letters = Counter("router_dead_letters", "Messages dead-lettered, by reason.", ["reason"], registry=r)
        self.failure_notifications = Counter(
            "router_failure_notifications",
            "Dead letters turned into on_failure notifications, by outcome: notified (one per notification "
            "channel), suppressed (a notification's own failure), render_error.",
            ["outcome"],
            registry=r,
        )
        self.dry_run = Gauge(
            "router_dry_run", "1 while dry run is on: deliveries are rendered and logged, nothing is sent.", registry=r
        )
        self.flow = Counter(
            "router_flow_decisions",
            "Flow-control decisions by rule: skipped (dedupe), dropped (rate_limit), delayed (throttle), collected (digest).",
            ["rule", "decision"],
            registry=r,
        )
        self.digests_flushed = Counter(
            "router_digests_flushed",
            "Batches scheduled for delivery: rule digests (digest) and channel summaries (fold).",
            ["kind"],
            registry=r,
        )
        self.pacing_wait = Histogram(
            "router_channel_pacing_wait_seconds",
            "Time a send waited in the process for its slot under the channel's rate limit.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.channel_folded = Counter(
            "router_channel_folded",
            "Deliveries folded into a summary message because the channel was saturated.",
            ["channel"],
            registry=r,
        )
        self.channel_deferred = Counter(
            "router_channel_deferred",
            "Deliveries put off as durable records to wait for the channel's rate limit.",
            ["channel"],
            registry=r,
        )
        self.channel_rate_limited = Counter(
            "router_channel_rate_limited",
            "Answers asking to slow down (429 or Retry-After) that paused a channel for every process.",
            ["channel"],
            registry=r,
        )
        self.config_reloads = Counter(
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
        self.plugin_errors = Counter(
            "router_plugin_hook_errors", "Plugin hook implementations that raised.", ["plugin"], registry=r
        )
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase) and getattr(metric, "_labelnames", None):
                _remember_children(metric)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _remember_children(metric: MetricWrapperBase) -> None:
    """Make ``metric.labels(...)`` a dict lookup after the first call for each set of values.

    prometheus_client validates the values and takes a lock on every ``labels`` call, which
    the hot path makes several times per event; label values here come from small fixed sets
    (channel and rule names, outcomes), so the children are few and worth keeping.
    """
    children: dict[object, Any] = {}
    make = metric.labels

    def labels(*values: Any, **named: Any) -> Any:
        key = (values, tuple(sorted(named.items()))) if named else values
        child = children.get(key)
        if child is None:
            child = children[key] = make(*values, **named)
        return child

    metric.labels = labels  # type: ignore[method-assign]
