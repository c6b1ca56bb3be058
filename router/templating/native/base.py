"""Parsing and validating a rendered rich block; the field types the payload models share."""

from __future__ import annotations

import functools
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from router.core.errors import TemplateError
from router.core.suggest import did_you_mean
from router.templating.filters import truncate_text

MAX_ERRORS_SHOWN = 3
MAX_YAML_EVENTS = 20_000  # a full Slack message (50 blocks of 10 fields) is a few thousand
_SNIPPET = 60
# `color: #57F287` reads as a colour in no YAML: the # starts a comment and the value is null.
_COMMENTED_COLOUR = re.compile(r"(?:^|[\s{,])colou?r:\s+#[0-9A-Fa-f]{3,8}\b")


class RichPayload(BaseModel):
    """Base of a channel's payload model; ``wire()`` is what the channel posts (``None`` fields left out)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)

    channel_type: ClassVar[str] = ""

    def wire(self) -> dict[str, Any]:
        """The payload as JSON-ready data, without the fields the template left out."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class Part(BaseModel):
    """A nested object of a payload: unknown keys are errors (they are typos more often than features)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)


class OpenPart(BaseModel):
    """A nested object the provider keeps extending (Slack blocks): unknown keys pass through unchanged."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, defer_build=True)


# -- field types ----------------------------------------------------------------------------


def _text_or_number(value: Any) -> Any:
    # YAML reads `value: 42` or `value: 3.5` as numbers; in a text field they mean their text.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def cut(limit: int) -> BeforeValidator:
    """A before-validator that shortens text to ``limit`` characters, ending it with "…" when cut."""

    def shorten(value: Any) -> Any:
        value = _text_or_number(value)
        return truncate_text(value, limit) if isinstance(value, str) else value

    return BeforeValidator(shorten)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NotBlank = AfterValidator(_not_blank)


def blank_is_absent(value: Any) -> Any:
    """``""`` (say, an optional value the data did not have) means the key was left out."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


Absent = BeforeValidator(blank_is_absent)

_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


def _http_url(value: str) -> str:
    value = value.strip()
    if not _URL.match(value):
        raise ValueError(f"expected an http(s) URL, got {show(value)}")
    return value


Url = Annotated[str, AfterValidator(_http_url)]
"""An http(s) URL."""

OptionalUrl = Annotated[Url | None, Absent]


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def shorthand(key: str) -> BeforeValidator:
    """Accept a bare string where an object is expected: ``footer: "text"`` means ``footer: {text: "text"}``."""

    def expand(value: Any) -> Any:
        value = _text_or_number(value)
        if isinstance(value, str):
            return {key: value} if value.strip() else None
        return value

    return BeforeValidator(expand)


# -- building a payload ---------------------------------------------------------------------


def build_payload(
    model: type[RichPayload],
    text: str,
    *,
    template: str | None,
    line: int | None,
    block: str,
    finish: Callable[[RichPayload], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Parse the rendered block ``text`` as YAML and validate it as ``model``; None when it is empty.

    An empty block (say, everything inside a false ``{% if %}``) means "no rich message this
    time": the channel then sends the title and body as usual.
    """
    source = textwrap.dedent(text)
    if not source.strip():
        return None

    def fail(message: str) -> TemplateError:
        return TemplateError(f"block '{block}': {message}", template=template, line=line)

    try:
        _check_shape(source)
        data = yaml.load(source, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _rendered_line(source, mark.line + 1) if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise fail(
            f"{where}not valid YAML: {problem} (insert values from data with the |yaml filter, "
            "which quotes them: title: {{ data.name|yaml }})"
        ) from None
    except yaml.YAMLError as exc:
        raise fail(f"not valid YAML: {exc}") from None
    except _ShapeError as exc:
        raise fail(f"{_rendered_line(source, exc.line)}{exc}") from None
    if data is None:
        return None
    for number, source_line in enumerate(source.splitlines(), start=1):
        if _COMMENTED_COLOUR.search(source_line):
            where = _rendered_line(source, number)
            raise fail(f'{where}an unquoted # starts a YAML comment: write the colour in quotes, "#57F287"')
    if not isinstance(data, dict):
        raise fail(f"expected a mapping of the message's keys (such as {_example(model)}), got {_kind(data)}")
    try:
        payload = model.model_validate(data)
    except ValidationError as exc:
        raise fail(_describe(exc, source, _known_keys(model))) from None
    except ValueError as exc:  # a model validator's own check (totals across embeds)
        raise fail(str(exc)) from None
    return finish(payload) if finish else payload.wire()


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed


class _ShapeError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _check_shape(source: str) -> None:
    """Refuse aliases and oversized documents before building anything (the YAML is the template's)."""
    for count, event in enumerate(yaml.parse(source, Loader=_Loader), start=1):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            line = mark.line + 1 if mark is not None else 1
            raise _ShapeError("aliases (*name) are not supported in a message block", line)
        if count > MAX_YAML_EVENTS:
            raise _ShapeError(f"more than {MAX_YAML_EVENTS:,} YAML values (no message has that many)", 1)


@functools.cache
def _known_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key the models of ``model``'s module know, to suggest one for a typo."""
    module = sys.modules[model.__module__]
    keys: set[str] = set()
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            keys.update(value.model_fields)
    return frozenset(keys)


def _example(model: type[RichPayload]) -> str:
    return ", ".join(list(model.model_fields)[:3])


def _kind(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    return f"the {type(data).__name__} {show(data)}"


def _rendered_line(source: str, number: int) -> str:
    lines = source.splitlines()
    if not 1 <= number <= len(lines):
        return f"rendered line {number}: "
    text = lines[number - 1].strip()
    if len(text) > _SNIPPET:
        text = text[: _SNIPPET - 1] + "…"
    return f"rendered line {number} ({text!r}): "


def _describe(exc: ValidationError, source: str, known: frozenset[str]) -> str:
    try:
        root = yaml.compose(source, Loader=_Loader)
    except yaml.YAMLError:
        root = None
    messages = []
    errors = exc.errors(include_url=False)
    for error in errors[:MAX_ERRORS_SHOWN]:
        path, node = _walk(root, error["loc"])
        where = _rendered_line(source, node.start_mark.line + 1) if node is not None else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            key = error["loc"][-1] if error["loc"] else ""
            message = "unknown key" + (did_you_mean(key, known) if isinstance(key, str) else "")
        messages.append(f"{where}{path or '(top level)'}: {message}")
    if len(errors) > MAX_ERRORS_SHOWN:
        messages.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "; ".join(messages)


def _walk(root: yaml.Node | None, loc: Sequence[int | str]) -> tuple[str, yaml.Node | None]:
    """The key path of a pydantic error location, and the YAML node it points at (when found).

    Pydantic puts the tag of a union member into the location (``blocks.0.section.text``);
    such entries are not keys of the YAML and are left out of the path.
    """
    path = ""
    node = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            if isinstance(node, yaml.SequenceNode) and 0 <= part < len(node.value):
                node = node.value[part]
            continue
        if isinstance(node, yaml.MappingNode):
            found = next((value for key, value in node.value if getattr(key, "value", None) == part), None)
            if found is None and _is_tag(node, part):
                continue
            path += f".{part}" if path else part
            if found is not None:
                node = found
            continue
        if isinstance(node, yaml.ScalarNode) and part in ("str", "dict"):
            continue  # shorthand unions (a string or an object)
        path += f".{part}" if path else part
    return path, node


def _is_tag(node: yaml.MappingNode, part: str) -> bool:
    """Whether ``part`` is the union tag of the mapping ``node`` (its ``type``), not one of its keys."""
    for key, value in node.value:
        if getattr(key, "value", None) == "type":
            return getattr(value, "value", None) == part or part in ("other", "text", "image")
    return part in ("other", "text", "image")
