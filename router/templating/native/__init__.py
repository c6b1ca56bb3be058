"""Channel-native rich messages: a template block named after the channel type, written in YAML.

``{% block discord %}`` (or ``slack``) renders YAML (JSON is YAML too) describing the message the
provider receives: Discord embeds, Slack Block Kit blocks. :func:`build_payload` parses it,
validates it against the channel's pydantic model (:class:`RichPayload` subclasses in
:mod:`router.templating.native.discord` and :mod:`router.templating.native.slack`) and returns the JSON-ready payload; every
failure is a :class:`router.core.errors.TemplateError` naming the template, the block's line, the
rendered YAML line and the key path.
"""

from __future__ import annotations

from router.templating.native.base import RichPayload, build_payload

__all__ = ["RichPayload", "build_payload"]
