"""Structured logs: one line per event and per delivery outcome, as text or JSON.

Callers pass the structured fields in ``extra={"fields": {...}}``; the formatters render them.
``extra={"text_hidden": ("name", ...)}`` leaves fields out of text lines whose message already
says the same in words (JSON lines keep every field).
Field values are produced by the router itself (ids, names, outcomes, scrubbed reasons), never
raw configuration values, so no secret reaches a log line.

With ``router serve --workers N`` every process logs to the same stream, and each line carries
the process's ``worker`` (0 for the parent, which serves HTTP; 1..N-1 for its consumers).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal

from router.core.redact import SecretFilter

LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        worker = getattr(record, "worker", None)
        if worker is not None:
            payload["worker"] = worker
        if record.exc_info and record.exc_info[0] is not None:
            payload["exception"] = record.exc_info[0].__name__
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger: msg key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        hidden = getattr(record, "text_hidden", ())  # fields the message already shows, in words
        if isinstance(fields, dict) and fields:
            shown = [f"{k}={_text_value(v)}" for k, v in fields.items() if k not in hidden]
            if shown:
                line += " " + " ".join(shown)
        worker = getattr(record, "worker", None)
        if worker is not None:
            line += f" worker={worker}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" exception={record.exc_info[0].__name__}"
        return line


def _text_value(value: Any) -> str:
    """A field value on one line: bare when plain, else quoted with JSON's escapes.

    Non-ASCII text (emoji, accents) stays as it is, to be read; what could break or disguise
    the line (line breaks and other control characters, bidirectional overrides, a lone
    surrogate) is escaped.
    """
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text:
        return text
    quoted = _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))
    return quoted.encode("utf-8", "backslashreplace").decode("utf-8")


_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Bidirectional embeddings, overrides and isolates: they can make a log line read differently."""


class WorkerFilter(logging.Filter):
    """Stamps every record with the number of the process that wrote it (``--workers``)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(fmt: LogFormat = "text", level: str = "INFO", *, worker: int | None = None) -> None:
    """Send the router's logs to stderr in ``fmt``; quiet chatty libraries.

    ``worker``: this process's number among ``router serve --workers``' processes, added to
    every line (None: one process, no such field).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # On the handler, so that every record is scrubbed, whichever library's logger made it.
    handler.addFilter(SecretFilter())
    if worker is not None:
        handler.addFilter(WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # apprise and aio-pika log URLs and connection strings at INFO/DEBUG; keep them at WARNING
    # so that a secret in a URL never reaches the log.
    for noisy in ("apprise", "aio_pika", "aiormq", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
