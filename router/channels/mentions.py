"""Who a chat message may ping: nobody, unless the channel names them.

Rendered text carries event data (user names, comments, titles), so a mention is never derived
from it: a name like ``@everyone`` or ``<@&987654321>`` must stay text. A channel opts in with
its ``mentions`` option, and then only the users, roles (Slack: user groups) and, if
``everyone: true``, the @everyone/@here (Slack: ``<!channel>``/``<!here>``/``<!everyone>``)
listed there ping.

* Discord: every message posted carries ``allowed_mentions`` built from the option alone
  (:func:`discord_allowed_mentions`); whatever a template or apprise put there is replaced.
* Slack has no such field: a mention is markup in the text, so every string of the posted
  body has the markup of mentions not allowed escaped to ``&lt;...&gt;`` (shown as written,
  pings nobody) by :func:`neutralise_slack`, and ``link_names`` (which turns a bare ``@here``
  into a mention) is dropped unless ``everyone`` is allowed.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SNOWFLAKE = r"^[0-9]{1,20}$"
_SLACK_ID = r"^[A-Z0-9]{2,40}$"


class Mentions(BaseModel):
    """The channel option ``mentions``: who messages may ping (nobody by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    users: tuple[str, ...] = Field(
        (), max_length=100, description="User IDs that may be pinged (Discord snowflakes, Slack U.../W... IDs)."
    )
    roles: tuple[str, ...] = Field(
        (), max_length=100, description="Role IDs (Discord) or user-group IDs (Slack S...) that may be pinged."
    )
    everyone: bool = Field(False, description="Whether @everyone/@here (Slack: <!channel>, <!here>) may ping.")


class DiscordMentions(Mentions):
    """``mentions`` of a Discord channel: IDs are numeric snowflakes."""

    @field_validator("users", "roles")
    @classmethod
    def _snowflakes(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        for value in ids:
            if not re.match(_SNOWFLAKE, value):
                raise ValueError(f"{value!r} is not a Discord ID (digits only)")
        return ids


class SlackMentions(Mentions):
    """``mentions`` of a Slack channel: user IDs U.../W..., user-group IDs S...."""

    @field_validator("users", "roles")
    @classmethod
    def _slack_ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        for value in ids:
            if not re.match(_SLACK_ID, value):
                raise ValueError(f"{value!r} is not a Slack ID (like U0123ABCD or S0123ABCD)")
        return ids


NOBODY = Mentions()


def discord_allowed_mentions(mentions: Mentions | None) -> dict[str, Any]:
    """Discord's ``allowed_mentions`` for ``mentions``: ``{"parse": []}`` (nobody) by default."""
    allowed = mentions or NOBODY
    result: dict[str, Any] = {"parse": ["everyone"] if allowed.everyone else []}
    if allowed.users:
        result["users"] = list(allowed.users)
    if allowed.roles:
        result["roles"] = list(allowed.roles)
    return result


def discord_finalize(body: dict[str, Any], mentions: Mentions | None) -> dict[str, Any]:
    """``body`` as posted to Discord: apprise's mention guesses gone, ``allowed_mentions`` the channel's."""
    body.pop("allow_mentions", None)  # apprise's (misspelt, ignored by Discord) guess from the text
    body["allowed_mentions"] = discord_allowed_mentions(mentions)
    return body


# <!channel>, <!here>, <!everyone>, <!subteam^S123|name>, <@U123>, <@W123|name>, each optionally
# with a "|label"; also the legacy forms with a leading space or "&lt;" are not markup, so ignored.
_SLACK_MENTION = re.compile(
    r"<(?P<kind>!channel|!here|!everyone|!subteam\^(?P<group>[^|>]*)|@(?P<user>[^|>]*))(?P<label>\|[^>]*)?>",
    re.IGNORECASE,
)
# Keys whose values are identifiers or URLs, never rendered as mrkdwn.
_SLACK_NON_TEXT = frozenset(
    {"channel", "thread_ts", "username", "icon_url", "icon_emoji", "image_url", "url", "type", "block_id"}
)


def _slack_allowed(match: re.Match[str], allowed: Mentions) -> bool:
    kind = match.group("kind").lower()
    if kind in ("!channel", "!here", "!everyone"):
        return allowed.everyone
    if match.group("group") is not None:
        return match.group("group") in allowed.roles
    return match.group("user") in allowed.users


def neutralise_slack_text(text: str, mentions: Mentions | None) -> str:
    """``text`` with the markup of every mention not allowed escaped (it then shows as text)."""
    allowed = mentions or NOBODY

    def replace(match: re.Match[str]) -> str:
        if _slack_allowed(match, allowed):
            return match.group(0)
        return "&lt;" + match.group(0)[1:-1] + "&gt;"

    return _SLACK_MENTION.sub(replace, text)


def neutralise_slack(body: Any, mentions: Mentions | None, key: str | None = None) -> Any:
    """Every text of a Slack payload with mentions not allowed neutralised; ``link_names`` off."""
    if isinstance(body, dict):
        cleaned = {k: neutralise_slack(v, mentions, k) for k, v in body.items()}
        if key is None and not (mentions or NOBODY).everyone:
            cleaned.pop("link_names", None)
        return cleaned
    if isinstance(body, list):
        return [neutralise_slack(item, mentions, key) for item in body]
    if isinstance(body, str) and key not in _SLACK_NON_TEXT:
        return neutralise_slack_text(body, mentions)
    return body
