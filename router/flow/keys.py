"""The keys flow-control decisions are made per: a rule's ``key`` template rendered for an event."""

from __future__ import annotations

import hashlib

from router.config.models import Rule
from router.core.events import Event
from router.runtime.runtime import Runtime
from router.templating.templates import build_context

MAX_KEY_LENGTH = 200
"""Longer rendered keys are stored as a hash: state keys stay small whatever a template renders."""


def render_key(runtime: Runtime, rule: Rule, event: Event, source: str | None) -> str:
    """``source`` rendered for ``event``; a spec without a key has a single bucket, the empty key.

    Raises TemplateError when the template fails (a missing variable, for instance).
    """
    if source is None:
        return ""
    return runtime.templates.render_string(source, build_context(event, rule=rule))


def state_key(kind: str, rule: Rule, key: str) -> str:
    """The state-store key of ``rule``'s ``kind`` decision (dedupe, rate, throttle) for ``key``."""
    if len(key) > MAX_KEY_LENGTH:
        key = "#" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return f"{kind}:{rule.name}:{key}"


def shown(key: str) -> str:
    """How `router test --explain` names a key."""
    return f"key {key!r}" if key else "one key for the whole rule"
