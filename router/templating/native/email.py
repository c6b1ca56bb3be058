"""The email a ``{% block email %}`` describes: recipients taken from the event, and the subject.

An email channel's ``to:`` is fixed in rules.yaml; a platform that mails a user (a reply to
their feedback, a receipt) needs the address from the event. The block gives it::

    {% block email %}
    to: {{ data.recipientEmail|yaml }}
    reply_to: support@example.com
    {% endblock %}

``to`` (with ``cc`` and ``bcc``) replaces the channel's recipients for this message; ``subject``
replaces the rendered title. The body is still the template's ``body`` block. An address that
is not one is a render error (dead-lettered with the template line), never a silent drop.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, field_validator, model_validator

from router.config.models import empty_list
from router.templating.native.base import Absent, RichPayload, show

SUBJECT_LIMIT = 998  # one header line (RFC 5322)
RECIPIENTS_LIMIT = 50

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def _one_or_many(value: Any) -> Any:
    # `to: ada@example.com` is as natural as `to: [ada@example.com]`.
    if isinstance(value, str):
        return [value] if value.strip() else []
    return value


Addresses = Annotated[list[str], BeforeValidator(_one_or_many)]


def _check(addresses: list[str]) -> list[str]:
    checked = []
    for address in addresses:
        address = address.strip()
        if not _ADDRESS.match(address):
            raise ValueError(f"{show(address)} is not an email address")
        checked.append(address)
    return checked


class EmailMessage(RichPayload):
    """Per-message recipients and subject of an email."""

    channel_type: ClassVar[str] = "email"

    to: Addresses = Field(default_factory=empty_list, max_length=RECIPIENTS_LIMIT)
    cc: Addresses = Field(default_factory=empty_list, max_length=RECIPIENTS_LIMIT)
    bcc: Addresses = Field(default_factory=empty_list, max_length=RECIPIENTS_LIMIT)
    reply_to: Annotated[str | None, Absent] = None
    subject: Annotated[str | None, Absent] = None

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return _check(value)

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _check([value])[0]

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # A newline in a header would end it: fold the subject onto one line, then cut it.
        line = " ".join(value.split())
        return line if len(line) <= SUBJECT_LIMIT else line[: SUBJECT_LIMIT - 1] + "…"

    @model_validator(mode="after")
    def _says_something(self) -> EmailMessage:
        if not (self.to or self.cc or self.bcc or self.reply_to or self.subject):
            raise ValueError("the block needs at least one of to, cc, bcc, reply_to, subject")
        return self
