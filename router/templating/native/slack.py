"""The Slack message a ``{% block slack %}`` describes: fallback text and Block Kit blocks.

The common blocks (section, header, context, divider, actions, image) are checked field by
field; others (rich_text, video, ...) and interactive elements pass through with only their
``type`` checked, as Slack keeps adding to them. A text object may be written as a bare string
(``text: "*hi*"``): mrkdwn, or plain_text where Slack requires it (header).

Limits (Slack's): text that is too long is cut and ends in "…" (section text 3,000, section
field 2,000, header 150, context text 3,000, image alt text 2,000, fallback text 40,000).
Structure that does not fit is an error: more than 50 blocks, more than 10 section fields,
more than 10 context elements, more than 25 action elements.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator

from router.templating.filters import truncate_text
from router.templating.native.base import Absent, NotBlank, OpenPart, OptionalUrl, Part, RichPayload, Url, cut, show

BLOCKS_LIMIT = 50
SECTION_TEXT_LIMIT = 3000
SECTION_FIELD_LIMIT = 2000
SECTION_FIELDS_LIMIT = 10
HEADER_LIMIT = 150
CONTEXT_TEXT_LIMIT = 3000
CONTEXT_ELEMENTS_LIMIT = 10
ACTIONS_LIMIT = 25
ALT_TEXT_LIMIT = 2000
IMAGE_TITLE_LIMIT = 2000
TEXT_LIMIT = 40_000
BLOCK_ID_LIMIT = 255
ATTACHMENTS_LIMIT = 100


class TextObject(Part):
    """A Block Kit text object."""

    type: Literal["mrkdwn", "plain_text"]
    text: Annotated[str, cut(TEXT_LIMIT), NotBlank]
    emoji: bool | None = None
    verbatim: bool | None = None


def _text_object(limit: int, default: str) -> BeforeValidator:
    def expand(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = {"type": default, "text": value}
        if isinstance(value, dict):
            value = dict(value)
            value.setdefault("type", default)
            text = value.get("text")
            if isinstance(text, (int, float)) and not isinstance(text, bool):
                text = str(text)
            if isinstance(text, str):
                value["text"] = truncate_text(text, limit)
        return value

    return BeforeValidator(expand)


def _plain_only(value: TextObject) -> TextObject:
    if value.type != "plain_text":
        raise ValueError("must be a plain_text text object (Slack does not format this text)")
    return value


PlainOnly = AfterValidator(_plain_only)

BlockId = Annotated[str | None, Field(max_length=BLOCK_ID_LIMIT)]


class Element(OpenPart):
    """An interactive or other element (button, select, ...): passed through, ``type`` required."""

    type: str


class ImageElement(Part):
    type: Literal["image"]
    image_url: Url
    alt_text: Annotated[str, cut(ALT_TEXT_LIMIT), NotBlank]


def _element_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "image" if kind == "image" else "text"


ContextElement = Annotated[
    Annotated[ImageElement, Tag("image")]
    | Annotated[Annotated[TextObject, _text_object(CONTEXT_TEXT_LIMIT, "mrkdwn")], Tag("text")],
    Discriminator(_element_tag),
]


class SectionBlock(Part):
    type: Literal["section"]
    text: Annotated[TextObject, _text_object(SECTION_TEXT_LIMIT, "mrkdwn")] | None = None
    fields: list[Annotated[TextObject, _text_object(SECTION_FIELD_LIMIT, "mrkdwn")]] | None = Field(
        None, max_length=SECTION_FIELDS_LIMIT
    )
    accessory: Element | None = None
    block_id: BlockId = None
    expand: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # `- "*Deploy* done"` in a list of blocks is a section with that mrkdwn text.
        return {"type": "section", "text": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_text(self) -> SectionBlock:
        if self.text is None and not self.fields:
            raise ValueError("a section needs text or fields")
        return self


class HeaderBlock(Part):
    type: Literal["header"]
    text: Annotated[TextObject, _text_object(HEADER_LIMIT, "plain_text"), PlainOnly]
    block_id: BlockId = None


class ContextBlock(Part):
    type: Literal["context"]
    elements: list[ContextElement] = Field(min_length=1, max_length=CONTEXT_ELEMENTS_LIMIT)
    block_id: BlockId = None


class DividerBlock(Part):
    type: Literal["divider"]
    block_id: BlockId = None


class ActionsBlock(Part):
    type: Literal["actions"]
    elements: list[Element] = Field(min_length=1, max_length=ACTIONS_LIMIT)
    block_id: BlockId = None


class ImageBlock(Part):
    type: Literal["image"]
    image_url: Url
    alt_text: Annotated[str, cut(ALT_TEXT_LIMIT), NotBlank]
    title: Annotated[TextObject, _text_object(IMAGE_TITLE_LIMIT, "plain_text"), PlainOnly] | None = None
    block_id: BlockId = None


class OtherBlock(OpenPart):
    """A block type not modelled here (rich_text, video, file, input...): passed through."""

    type: str


_BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "image"}


def _block_tag(value: Any) -> str:
    if isinstance(value, str):
        return "section"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _BLOCK_TYPES else "other"


Block = Annotated[
    Annotated[SectionBlock, Tag("section")]
    | Annotated[HeaderBlock, Tag("header")]
    | Annotated[ContextBlock, Tag("context")]
    | Annotated[DividerBlock, Tag("divider")]
    | Annotated[ActionsBlock, Tag("actions")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_tag),
]

Blocks = Annotated[list[Block] | None, Field(max_length=BLOCKS_LIMIT)]


def _attachment_color(value: Any) -> Any:
    if value is None or value in ("good", "warning", "danger"):
        return value
    if isinstance(value, str) and len(value.strip().lstrip("#")) == 6:
        try:
            int(value.strip().lstrip("#"), 16)
            return "#" + value.strip().lstrip("#").upper()
        except ValueError:
            pass
    raise ValueError(f'expected a colour like "#36A64F" (in quotes) or good / warning / danger, got {show(value)}')


class Attachment(OpenPart):
    """A secondary attachment: a coloured bar beside its blocks (other legacy keys pass through)."""

    color: Annotated[str | None, Absent, BeforeValidator(_attachment_color)] = None
    blocks: Blocks = None


class SlackMessage(RichPayload):
    """A Slack message (https://api.slack.com/reference/messaging/payload)."""

    channel_type: ClassVar[str] = "slack"

    text: Annotated[str | None, cut(TEXT_LIMIT), Absent] = None
    blocks: Blocks = None
    attachments: list[Attachment] | None = Field(None, max_length=ATTACHMENTS_LIMIT)
    username: Annotated[str | None, cut(80), Absent] = None
    icon_url: OptionalUrl = None
    icon_emoji: str | None = None
    mrkdwn: bool | None = None
    unfurl_links: bool | None = None
    unfurl_media: bool | None = None
    thread_ts: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SlackMessage:
        if not self.text and not self.blocks and not self.attachments:
            raise ValueError("the message needs text, blocks or attachments")
        return self
