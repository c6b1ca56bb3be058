"""What one activity record says, and how outcomes combine (docs/activity.md, "Outcomes")."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from router.core.redact import MASK, registered_secrets, scrub
from router.support import fast_json

OUTCOMES: tuple[str, ...] = ("sent", "failed", "dead", "skipped", "pending", "dry_run", "rejected")
"""The values of the ``outcome`` filter (``failed``: at least one failed attempt; ``rejected``: a
message that never became a routed event, see :func:`rejected_id`)."""

REJECTED = "rejected"
MAX_REJECTION_ERROR = 300  # characters of a rejection's reason kept: the router's own words, bounded
MAX_MESSAGE_ID = 200

VERDICTS: tuple[str, ...] = ("fired", "not_matched", "deduped", "rate_limited", "throttled", "digested", "folded")

ATTEMPT_OUTCOMES: tuple[str, ...] = ("sent", "retry", "dead", "dry_run", "already_sent", "skipped")

# flow/control.py's decisions, as the activity names them.
FLOW_VERDICTS: dict[str, str] = {
    "skipped": "deduped",
    "dropped": "rate_limited",
    "delayed": "throttled",
    "collected": "digested",
}

# An attempt's outcome -> its channel's outcome.
_CHANNEL_OUTCOME: dict[str, str] = {
    "sent": "sent",
    "already_sent": "sent",
    "retry": "pending",
    "dead": "dead",
    "dry_run": "dry_run",
    "skipped": "skipped",
}
# The first that applies wins (an event's overall outcome).
_PRECEDENCE: tuple[str, ...] = ("dead", "pending", "sent", "dry_run", "skipped")

_HTTP_STATUS = re.compile(r"^HTTP (\d{3})\b")


def channel_outcome(attempt_outcome: str, error: str | None = None) -> str:
    """What a channel's latest attempt means for it; a delivery deferred by pacing is still pending."""
    if attempt_outcome == "skipped" and error and error.startswith("deferred"):
        return "pending"
    return _CHANNEL_OUTCOME.get(attempt_outcome, "skipped")


def overall(outcomes: Iterable[str]) -> str:
    """An event's outcome from its channels' (and jobs') outcomes."""
    present = set(outcomes)
    for outcome in _PRECEDENCE:
        if outcome in present:
            return outcome
    return "skipped"


def http_status(reason: str) -> int | None:
    """The HTTP status a channel's reason names (``HTTP 503 ...``), if any."""
    match = _HTTP_STATUS.match(reason)
    return int(match.group(1)) if match else None


def error_class(status: str, reason: str) -> str | None:
    """A short class of a failure: ``timeout``, ``exception:<Type>``, ``http``, ``retryable`` or ``permanent``."""
    if status in ("sent", "skipped"):
        return None
    if reason.startswith("channel raised "):
        return "exception:" + reason.removeprefix("channel raised ").split()[0]
    if "timeout" in reason or "did not answer" in reason:
        return "timeout"
    if reason.startswith("HTTP "):
        return "http"
    return "retryable" if status == "retry" else "permanent"


def iso(epoch: float | None) -> str | None:
    """An epoch as ISO 8601 UTC with milliseconds (``...Z``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(value: Any) -> str:
    """``value`` as compact JSON with every registered secret masked (never a secret in the store)."""
    return scrub_text(fast_json.dumps(value))


_PATTERN: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)


def scrub_text(text: str) -> str:
    """``text`` with every registered secret (and its URL-encoded forms) replaced by the mask."""
    global _PATTERN
    secrets = registered_secrets()
    if not secrets:
        return text
    built_for, pattern = _PATTERN
    if built_for is not secrets:  # the set is replaced, never mutated, when a secret is registered
        ordered = sorted(secrets, key=len, reverse=True)  # longest first: a secret inside another is masked whole
        pattern = re.compile("|".join(map(re.escape, ordered)))
        _PATTERN = (secrets, pattern)
    assert pattern is not None
    return pattern.sub(MASK, text)


def summarise(
    attempts: Iterable[tuple[str, str, str, str | None]],
    fired: Iterable[str],
    verdicts: Iterable[tuple[str, str]],
    jobs: Iterable[tuple[str, str]],
) -> tuple[str, dict[str, str], bool]:
    """(overall outcome, channel -> outcome, had a failed attempt) of one event.

    ``attempts``: (rule, channel, outcome, error) oldest first; ``verdicts``: (rule, verdict);
    ``jobs``: (rule, outcome).
    """
    latest: dict[tuple[str, str], str] = {}
    failed = False
    for rule, channel, outcome, error in attempts:
        latest[(rule, channel)] = channel_outcome(outcome, error)
        failed = failed or outcome in ("retry", "dead")
    channels: dict[str, str] = {}
    for (_rule, channel), outcome in latest.items():
        channels[channel] = overall((channels.get(channel, outcome), outcome))
    rules_with_attempts = {rule for rule, _channel in latest}
    extra: list[str] = []
    for rule, verdict in verdicts:
        if verdict == "throttled" and rule not in rules_with_attempts:
            extra.append("pending")
    for _rule, outcome in jobs:
        if outcome in ("dead", "retry"):
            failed = True
            extra.append("dead" if outcome == "dead" else "pending")
        elif outcome == "ok":
            extra.append("sent")
    _ = list(fired)
    return overall([*channels.values(), *extra]), channels, failed


def rejected_id(kind: str, body_digest: str, *, event_id: str | None = None, message_id: str | None = None) -> str:
    """The id a rejected message is recorded under (docs/activity.md, "Rejected messages").

    The event's own id when it decoded (a schema failure); else, for an event, the message id
    its publisher gave (AMQP ``message_id``: `router.Publisher` sets the event id there); else
    ``poison-<digest of the body>``, the id its failure notification is delivered under, so the
    two share one story and a redelivered message is not recorded twice. A retry record's
    claimed event id is never used: the record failed its signature or could not be read.
    """
    if event_id is not None:
        return event_id
    if kind == "event" and message_id and len(message_id) <= MAX_MESSAGE_ID and message_id.isprintable():
        return message_id
    return f"poison-{body_digest}"


def rejection_error(error: str) -> str:
    """A rejection's reason as the activity keeps it: secrets and URLs scrubbed (as in dead
    letters), cut to :data:`MAX_REJECTION_ERROR` characters; never the message's bytes."""
    text = scrub(error, registered_secrets())
    return text if len(text) <= MAX_REJECTION_ERROR else text[: MAX_REJECTION_ERROR - 3] + "..."


def counts_template() -> dict[str, int]:
    """Every outcome at zero (the ``counts`` of an empty list)."""
    return dict.fromkeys(OUTCOMES, 0)


def merge_counts(into: dict[str, int], rows: Mapping[str, int]) -> dict[str, int]:
    for key, value in rows.items():
        if key in into:
            into[key] += value
    return into
