"""Text output of `router activity` and `router trace`, and the HTTP client behind their ``--url``."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def format_table(answer: dict[str, Any]) -> str:
    """The activity list as a table: time, event id, type, rules fired, outcome per channel."""
    rows = [("TIME", "EVENT ID", "TYPE", "RULES FIRED", "OUTCOME")]
    for event in answer["events"]:
        moment = _time(event["received_at"])
        channels = ", ".join(f"{name}={outcome}" for name, outcome in sorted(event["channels"].items()))
        rows.append(
            (
                moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-",
                event["event_id"],
                event["type"],
                ",".join(event["rules_fired"]) or "-",
                f"{event['outcome']}" + (f" ({channels})" if channels else "") + _rejection_note(event),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) for row in rows]
    counts = answer.get("counts", {})
    lines.append("")
    lines.append("  ".join(f"{key}: {value}" for key, value in counts.items()))
    if answer.get("next"):
        lines.append(f"more: --before {answer['next']}")
    return "\n".join(lines)


def _rejection_note(event: dict[str, Any]) -> str:
    """`` (schema: data.n: required property missing)`` for a rejected message, else ""."""
    rejection = event.get("rejection")
    if not rejection:
        return ""
    error = str(rejection.get("error") or "")
    return f" ({rejection['reason']}: {error[:80] + ('...' if len(error) > 80 else '')})" if error else ""


def format_trace(story: dict[str, Any]) -> str:
    """One event's timeline, times relative to its arrival."""
    start = _time(story.get("received_at"))

    def rel(value: str | None) -> str:
        moment = _time(value)
        if moment is None or start is None:
            return "       "
        return f"+{(moment - start).total_seconds() * 1000:8.1f}ms"

    event = story.get("event") or {}
    lines = [
        f"event {event.get('id', story.get('event_id'))}  type {event.get('type', '-')}  source {event.get('source', '-')}",
        f"{rel(story.get('received_at'))}  received via {story.get('transport') or '?'} by {story.get('process') or '?'}"
        f" ({story.get('size') or 0} bytes)",
        f"{rel(story.get('received_at'))}  schema: {story.get('schema') or 'not checked (not decoded)'}",
    ]
    rejection = story.get("rejection")
    if rejection:
        lines.append(
            f"{rel(story.get('received_at'))}  rejected ({rejection['reason']}): {rejection.get('error') or '-'}; "
            f"dead letter {rejection.get('dead_letter_id') or '?'} (router dlq list)"
        )
    for rule in story.get("rules", []):
        reason = f": {rule['reason']}" if rule.get("reason") else ""
        lines.append(f"{rel(rule.get('at'))}  rule {rule['rule']}: {rule['verdict']}{reason}")
    for job in story.get("jobs", []):
        error = f": {job['error']}" if job.get("error") else ""
        lines.append(f"{rel(job.get('at'))}  job {job['job']} (rule {job['rule']}): {job['outcome']}{error}")
    for delivery in story.get("deliveries", []):
        message = delivery.get("message") or {}
        lines.append(
            f"  delivery {delivery['rule']} -> {delivery['channel']} ({delivery['channel_type']}), "
            f"key {delivery['idempotency_key']}: {delivery.get('outcome')}"
        )
        if message:
            lines.append(f"           rendered: {message.get('title', '')!r}")
        for attempt in delivery["attempts"]:
            parts = [f"attempt {attempt.get('attempt')}: {attempt['outcome']}", f"{attempt['duration_ms']}ms"]
            if attempt.get("status"):
                parts.append(f"HTTP {attempt['status']}")
            if attempt.get("error"):
                parts.append(str(attempt["error"]))
            if attempt.get("retry_at"):
                parts.append(f"retry at {rel(attempt['retry_at']).strip()}")
            lines.append(f"{rel(attempt.get('started_at'))}    " + ", ".join(parts))
    lines.append(f"outcome: {story.get('outcome')}")
    return "\n".join(lines)


class ApiError(Exception):
    """The API answered an error (its message) or could not be reached."""


def api_call(base: str, path: str, *, token: str | None = None, params: dict[str, Any] | None = None) -> Any:
    """GET ``path`` of a running router's API; its JSON answer."""
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v not in (None, "")})
    request = urllib.request.Request(base.rstrip("/") + path + (f"?{query}" if query else ""))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", "")
        except ValueError:
            message = ""
        raise ApiError(f"HTTP {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ApiError(f"cannot reach {base}: {type(error).__name__}") from None
