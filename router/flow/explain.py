"""What flow control would do with an event, for `router test --explain` (no state is touched)."""

from __future__ import annotations

from collections.abc import Callable

from router.config.models import Rule
from router.core.durations import format_duration
from router.core.errors import TemplateError
from router.core.events import Event
from router.flow import dedupe, digest, ratelimit, throttle
from router.flow.keys import render_key
from router.pipeline.pacing import pace_of
from router.runtime.runtime import Runtime


def describe_flow(runtime: Runtime, rule: Rule, event: Event) -> list[str]:
    """One line per flow-control setting of ``rule`` and per paced channel it delivers to.

    Keys are rendered for ``event`` so the author sees what the decision is made on; whether
    the key was seen before depends on the live state store, which this does not consult.
    """
    lines: list[str] = []
    specs: list[tuple[str | None, Callable[[str], str]]] = []
    if rule.dedupe is not None:
        spec_d = rule.dedupe
        specs.append((spec_d.key, lambda key: dedupe.describe(spec_d, key)))
    if rule.rate_limit is not None:
        spec_r = rule.rate_limit
        specs.append((spec_r.key, lambda key: ratelimit.describe(spec_r, key)))
    if rule.throttle is not None:
        spec_t = rule.throttle
        specs.append((spec_t.key, lambda key: throttle.describe(spec_t, key)))
    if rule.digest is not None:
        spec_g = rule.digest
        specs.append((spec_g.key, lambda key: digest.describe(spec_g, key)))
    for source, describe in specs:
        try:
            key = render_key(runtime, rule, event, source)
        except TemplateError as error:
            line = describe("?")
            lines.append(f"{line.split(':', 1)[0]}: key does not render for this event: {error}")
            continue
        lines.append(describe(key))
    for channel in rule.channels if rule.job == "notify" else []:
        config = runtime.loaded.channel_configs.get(channel)
        if config is None:
            continue
        pace = pace_of(runtime.channel_class(channel), config)
        if pace is None:
            continue
        then = "folded into one summary message" if pace.fold else "kept waiting, durably, for a slot"
        lines.append(
            f"channel {channel}: paced to {pace.limit} per {format_duration(pace.period)} across all "
            f"processes; when more than {format_duration(pace.hold)} of sends are queued, deliveries are {then}"
        )
    return lines
