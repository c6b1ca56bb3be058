"""Helpers for the rich-message tests: render a template folder as one channel type receives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.channels.base import Channel
from router.core.message import Message
from router.templating.filters import BUILTIN_FILTERS
from router.templating.templates import Rendered, Templates, build_context
from tests.builders import make_event


def write(folder: Path, files: dict[str, str]) -> Templates:
    for name, source in files.items():
        (folder / name).write_text(source, encoding="utf-8")
    templates = Templates(folder, BUILTIN_FILTERS)
    assert templates.compile_all() == []
    return templates


def render(folder: Path, files: dict[str, str], name: str, data: dict[str, Any], channel: type[Channel]) -> Rendered:
    """Render ``name`` from ``files`` for a channel of class ``channel`` (its type, limits and payload model)."""
    templates = write(folder, files)
    context = build_context(
        make_event(data), channel={"name": "c", "type": channel.type_name, "markdown": channel.markdown}
    )
    return templates.render(
        name,
        context,
        channel_type=channel.type_name,
        max_title=channel.max_title,
        max_body=channel.max_body,
        payload_model=channel.payload_model,
    )


def message(rendered: Rendered) -> Message:
    return Message(rendered.title, rendered.body, meta={"event_id": "evt-1"}, payload=rendered.payload)
