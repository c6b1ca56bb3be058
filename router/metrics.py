"""Prometheus metrics of one router process.

Label values are bounded: channel and rule names come from the configuration, outcomes and
reasons from small fixed sets; never event ids or raw event types.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.flow = Counter(
            "router_flow_decisions",
            "Flow-control decisions (dedupe, rate_limit, throttle, digest), by rule.",
            ["rule", "decision"],
            registry=r,
        )
        self.config_reloads = Counter(
            "router_config_reloads", "Configuration reloads, by result.", ["result"], registry=r
        )
        self.config_last_reload_ok = Gauge(
            "router_config_last_reload_successful", "1 if the last reload succeeded, 0 if it failed.", registry=r
        )
        self.config_last_reload_ok.set(1)
        self.in_flight = Gauge("router_events_in_flight", "Messages being processed.", registry=r)
        self.queue_depth = Gauge("router_queue_depth", "Events waiting in the queue, where known.", registry=r)
        self.plugin_errors = Counter(
            "router_plugin_hook_errors", "Plugin hook implementations that raised.", ["plugin"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
