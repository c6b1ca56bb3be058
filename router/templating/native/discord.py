"""The Discord webhook message a ``{% block discord %}`` describes: content, embeds and their parts.

Limits (Discord's): text that is too long is cut and ends in "…" (content 2,000; username 80;
embed title 256, description 4,096, field name 256, field value 1,024, footer 2,048, author
name 256). Structure that does not fit is an error: more than 10 embeds, more than 25 fields in
one embed. The 6,000 characters Discord allows across all embeds of a message are met by
cutting embed descriptions (the last embed's first); when the other texts alone pass it, it is
an error.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from router.templating.filters import _to_datetime, truncate_text
from router.templating.native.base import (
    Absent,
    NotBlank,
    OptionalUrl,
    Part,
    RichPayload,
    Url,
    cut,
    shorthand,
    show,
)

CONTENT_LIMIT = 2000
USERNAME_LIMIT = 80
EMBEDS_LIMIT = 10
FIELDS_LIMIT = 25
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
AUTHOR_LIMIT = 256
TOTAL_LIMIT = 6000

_HEX = re.compile(r"^(?:#|0x)?([0-9A-Fa-f]{6})$")


def _color(value: Any) -> Any:
    if isinstance(value, str):
        match = _HEX.match(value.strip())
        if not match:
            raise ValueError(
                f'expected a colour like "#57F287" (in quotes: # starts a YAML comment), got {show(value)}'
            )
        return int(match.group(1), 16)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected a colour like "#57F287" or a number, got {show(value)}')
    if not 0 <= value <= 0xFFFFFF:
        raise ValueError("a colour number must be from 0 to 16777215 (0xFFFFFF)")
    return value


def _timestamp(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (str, int, float, datetime, date)) and not isinstance(value, bool):
        return _to_datetime(value).isoformat()
    raise ValueError(f"expected an ISO 8601 date/time or epoch seconds, got {show(value)}")


class EmbedField(Part):
    name: Annotated[str, cut(FIELD_NAME_LIMIT), NotBlank]
    value: Annotated[str, cut(FIELD_VALUE_LIMIT), NotBlank]
    inline: bool | None = None


class EmbedFooter(Part):
    text: Annotated[str, cut(FOOTER_LIMIT), NotBlank]
    icon_url: OptionalUrl = None


class EmbedAuthor(Part):
    name: Annotated[str, cut(AUTHOR_LIMIT), NotBlank]
    url: OptionalUrl = None
    icon_url: OptionalUrl = None


class EmbedMedia(Part):
    url: Url


class Embed(Part):
    title: Annotated[str | None, cut(TITLE_LIMIT), Absent] = None
    description: Annotated[str | None, cut(DESCRIPTION_LIMIT), Absent] = None
    url: OptionalUrl = None
    color: Annotated[int | None, Absent, BeforeValidator(lambda v: v if v is None else _color(v))] = None
    timestamp: Annotated[str | None, BeforeValidator(_timestamp)] = None
    fields: list[EmbedField] | None = Field(None, max_length=FIELDS_LIMIT)
    footer: Annotated[EmbedFooter | None, shorthand("text")] = None
    author: Annotated[EmbedAuthor | None, shorthand("name")] = None
    thumbnail: Annotated[EmbedMedia | None, shorthand("url")] = None
    image: Annotated[EmbedMedia | None, shorthand("url")] = None

    @model_validator(mode="after")
    def _not_empty(self) -> Embed:
        if not (
            self.title or self.description or self.fields or self.footer or self.author or self.image or self.thumbnail
        ):
            raise ValueError("an embed needs a title, description, fields, author, footer or image")
        return self

    def text_length(self) -> int:
        """What counts towards Discord's 6,000 characters per message."""
        total = len(self.title or "") + len(self.description or "")
        total += sum(len(field.name) + len(field.value) for field in self.fields or ())
        total += len(self.footer.text) if self.footer else 0
        total += len(self.author.name) if self.author else 0
        return total


class AllowedMentions(Part):
    parse: list[Literal["users", "roles", "everyone"]] | None = None
    users: list[str] | None = Field(None, max_length=100)
    roles: list[str] | None = Field(None, max_length=100)
    replied_user: bool | None = None


DEFAULT_ALLOWED_MENTIONS: dict[str, Any] = {"parse": []}
"""Mentions in ``content`` that ping: none. The channel replaces this with its ``mentions`` option
when it posts (router/channels/mentions.py); a template's own ``allowed_mentions`` is replaced too."""


class DiscordMessage(RichPayload):
    """A Discord webhook message (https://discord.com/developers/docs/resources/webhook#execute-webhook)."""

    channel_type: ClassVar[str] = "discord"

    content: Annotated[str | None, cut(CONTENT_LIMIT), Absent] = None
    username: Annotated[str | None, cut(USERNAME_LIMIT), Absent] = None
    avatar_url: OptionalUrl = None
    tts: bool | None = None
    embeds: list[Embed] | None = Field(None, max_length=EMBEDS_LIMIT)
    allowed_mentions: AllowedMentions | None = None

    @field_validator("embeds", mode="before")
    @classmethod
    def _one_embed(cls, value: Any) -> Any:
        # `embed: {...}` is a common slip for a one-item list; a single mapping is accepted as one.
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _fit(self) -> DiscordMessage:
        if not self.content and not self.embeds:
            raise ValueError("the message needs content or at least one embed")
        embeds = self.embeds or []
        excess = sum(embed.text_length() for embed in embeds) - TOTAL_LIMIT
        for embed in reversed(embeds):
            if excess <= 0:
                break
            if embed.description:
                keep = max(len(embed.description) - excess, 0)
                shortened = truncate_text(embed.description, keep) if keep else None
                excess -= len(embed.description) - len(shortened or "")
                embed.description = shortened
        if excess > 0:
            raise ValueError(
                f"the embeds have {TOTAL_LIMIT + excess:,} characters of text, {excess:,} more than the "
                f"{TOTAL_LIMIT:,} Discord allows in one message (titles, descriptions, fields, footers, authors)"
            )
        if self.content and self.allowed_mentions is None:
            self.allowed_mentions = AllowedMentions.model_validate(DEFAULT_ALLOWED_MENTIONS)
        return self
