"""Render every fired rule's template for each of its channels, as `router test` checks an event.

Routing alone says nothing about a template with a typo (``data.usr.name``) when the event
type declares no schema: only a real delivery would find it. `router test` and
`router test --cases` therefore render each fired rule's template exactly as each of the
rule's channels would receive it (per-channel-type blocks and limits included) and report
the first error of each (rule, channel) with the template and line.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config.models import Rule
from router.core.errors import TemplateError
from router.core.events import Event
from router.runtime.runtime import Runtime


@dataclass(frozen=True)
class RenderFailure:
    """A fired rule's template that does not render for one of its channels."""

    rule: str
    channel: str
    channel_type: str
    error: str  # "TEMPLATE, line N: reason"

    def __str__(self) -> str:
        return f"rule {self.rule} -> {self.channel} ({self.channel_type}): {self.error}"


def render_failures(runtime: Runtime, rules: list[Rule], event: Event) -> list[RenderFailure]:
    """Render ``rules``' templates for ``event``, once per channel; the failures, in rule order.

    A rule without a template or without channels (a job that picks its own) is skipped: what
    it renders, and for whom, is the job's to say.
    """
    failures = []
    for rule in rules:
        if rule.template is None:
            continue
        batch = [event] if rule.digest is not None else None  # a digest template expects a batch
        for channel in rule.channels:
            try:
                runtime.render(rule, channel, event, events=batch)
            except TemplateError as error:
                failures.append(RenderFailure(rule.name, channel, runtime.channel_type(channel), str(error)))
    return failures
