"""Email over SMTP, sent by apprise (``mailto://`` and ``mailtos://`` URLs in apprise's syntax).

Apprise sends one message per ``to`` address, each carrying the ``cc`` and ``bcc``
addresses (so with two ``to`` addresses a ``cc`` gets two copies). With ``format: html`` the
body is wrapped in a minimal HTML document and apprise sends it as multipart/alternative
with a plain-text part derived from it.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import ConfigDict, Field, field_validator

from router.channels.apprise.base import AppriseBackedChannel, AppriseChannelConfig, wrong_type_hint
from router.channels.base import ChannelConfig, imported_on_use
from router.config.models import empty_list
from router.core.message import Message, Outcome
from router.core.redact import redact_url
from router.templating.native import RichPayload

if TYPE_CHECKING:
    import apprise

    from router.templating.native.email import EmailMessage

RECIPIENT_OBJECTS_CACHED = 64
"""Apprise objects kept for per-message recipient sets (a reply to a user's feedback, say)."""

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_NAMED_ADDRESS = re.compile(r"^[^<>@]*<\s*[^@\s<>,;\"]+@[^@\s<>,;\"]+\s*>$")


def _check_address(value: str, *, named: bool = False) -> str:
    value = value.strip()
    if _ADDRESS.match(value) or (named and _NAMED_ADDRESS.match(value)):
        return value
    raise ValueError(f"{value!r} is not an email address")


def _split_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    base, _, query = url.strip().partition("?")
    return base, parse_qsl(query, keep_blank_values=True)


def html_document(title: str, body: str) -> str:
    """``body`` (plain text) as a minimal HTML document: paragraphs at blank lines, <br> at newlines."""
    paragraphs = [p for p in re.split(r"\n\s*\n", body.replace("\r\n", "\n").strip()) if p.strip()]
    rendered = "\n".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{rendered}\n</body></html>"
    )


class EmailConfig(AppriseChannelConfig):
    """Options of an ``email`` channel::

    team-email:
      type: email
      url: "mailtos://user:${SMTP_PASSWORD}@smtp.example.com"
      from: "Router <router@example.com>"
      to: [team@example.com]
      cc: [lead@example.com]
      format: html                    # or text
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    url: str = Field(
        description=(
            "SMTP server in apprise's syntax: mailtos://user:pass@smtp.example.com (TLS) or "
            "mailto://smtp.example.com:25 (plain); apprise's ?options (smtp, mode, name, ...) are kept."
        )
    )
    to: list[str] = Field(
        default_factory=empty_list,
        description=(
            "Recipients; one message is sent to each. May be left out when the templates name the recipients "
            "in a {% block email %} (to: ...); a message with recipients from neither fails."
        ),
    )
    cc: list[str] = Field(default_factory=empty_list, description="Carbon-copy addresses, added to every message.")
    bcc: list[str] = Field(default_factory=empty_list, description="Blind carbon-copy addresses.")
    from_: str | None = Field(None, alias="from", description="Sender, 'bot@example.com' or 'Bot <bot@example.com>'.")
    format: Literal["html", "text"] = Field(
        "html", description="html: multipart text + HTML (body wrapped in minimal HTML); text: plain text only."
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        value = value.strip()
        scheme = value.split(":", 1)[0].lower()
        if scheme not in ("mailto", "mailtos") or not value[len(scheme) :].startswith("://"):
            raise ValueError(
                "expected an apprise email URL: mailtos://user:pass@smtp.example.com or mailto://host:port"
                + wrong_type_hint(value, "email")
            )
        try:
            host = urlsplit(_split_url(value)[0]).hostname
        except ValueError:
            host = None
        if not host:
            raise ValueError("the email URL needs a host: mailtos://user:pass@smtp.example.com")
        return value

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _valid_addresses(cls, value: list[str]) -> list[str]:
        return [_check_address(v) for v in value]

    @field_validator("from_")
    @classmethod
    def _valid_sender(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value, named=True)

    @property
    def has_recipients(self) -> bool:
        """Whether the channel itself names recipients (``to:`` or the URL), not only its templates."""
        base, query = _split_url(self.url)
        return bool(self.to or any(key == "to" and val for key, val in query) or urlsplit(base).path.strip("/"))


class EmailChannel(AppriseBackedChannel):
    """Sends each message as an email through an SMTP server."""

    type_name: ClassVar[str] = "email"
    Config: ClassVar[type[ChannelConfig]] = EmailConfig
    max_title: ClassVar[int | None] = 998  # one header line (RFC 5322)
    max_body: ClassVar[int | None] = None
    markdown: ClassVar[str | None] = None
    payload_model: ClassVar[type[RichPayload] | None] = imported_on_use(
        "router.templating.native.email", "EmailMessage"
    )
    apprise_plugin: ClassVar[tuple[str, str] | None] = ("apprise.plugins.email", "NotifyEmail")

    config: EmailConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, EmailConfig):
            raise TypeError(f"EmailChannel needs an EmailConfig, got {type(config).__name__}")
        super().__init__(name, config)
        self._by_recipients: OrderedDict[tuple[Any, ...], apprise.Apprise] = OrderedDict()

    def secrets(self) -> list[str]:
        try:
            password = urlsplit(_split_url(self.config.url)[0]).password
        except ValueError:
            password = None
        secrets = [password] if password else []
        # apprise also takes the password as ?pass=
        secrets += [v for k, v in _split_url(self.config.url)[1] if k in ("pass", "password") and v]
        return secrets

    def apprise_urls(self) -> list[tuple[str, list[str]]]:
        return [self._url()]

    def _url(self, override: EmailMessage | None = None) -> tuple[str, list[str]]:
        cfg = self.config
        base, query = _split_url(cfg.url)
        params: dict[str, str] = {}
        url_to: list[str] = []
        for key, value in query:
            if key == "to":
                url_to.append(value)
            else:
                params[key] = value
        recipients = [*url_to, *cfg.to]
        cc, bcc = cfg.cc, cfg.bcc
        if override is not None and (override.to or override.cc or override.bcc):
            # The template names the recipients: they replace the channel's, all three lists together,
            # so a copy meant for the channel's team never goes to the user's thread by accident.
            recipients, cc, bcc = override.to, override.cc, override.bcc
        if override is not None and override.reply_to:
            params["reply"] = override.reply_to
        if recipients:
            params["to"] = ",".join(recipients)
        elif override is not None:
            # No `to` in the URL makes apprise mail the SMTP account itself; a cc/bcc-only message
            # then still has a sensible To.
            params.pop("to", None)
        if cc:
            params["cc"] = ",".join(cc)
        if bcc:
            params["bcc"] = ",".join(bcc)
        if cfg.from_:
            params["from"] = cfg.from_
        params["format"] = cfg.format
        # %20, not "+": apprise unquotes without turning "+" into a space ("Learning+Platform <...>").
        return (f"{base}?{urlencode(params, quote_via=quote)}", [])

    def _override(self, message: Message) -> EmailMessage | None:
        if not message.payload:
            return None
        from router.templating.native.email import EmailMessage

        return EmailMessage.model_validate(message.payload)

    def apprise_for(self, message: Message) -> apprise.Apprise:
        override = self._override(message)
        if override is None or not (override.to or override.cc or override.bcc or override.reply_to):
            return self._apprise
        key = (tuple(override.to), tuple(override.cc), tuple(override.bcc), override.reply_to)
        apobj = self._by_recipients.get(key)
        if apobj is None:
            apobj = self._build([self._url(override)])
            self._by_recipients[key] = apobj
            if len(self._by_recipients) > RECIPIENT_OBJECTS_CACHED:
                self._by_recipients.popitem(last=False)
        else:
            self._by_recipients.move_to_end(key)
        return apobj

    def preview(self, message: Message) -> list[dict[str, Any]] | None:
        """For a message whose template names its recipients: the envelope it would go out with."""
        override = self._override(message)
        if override is None:
            return None
        own = bool(override.to or override.cc or override.bcc)
        envelope: dict[str, Any] = {
            "to": override.to if own else list(self.config.to),
            "cc": override.cc if own else list(self.config.cc),
            "bcc": override.bcc if own else list(self.config.bcc),
            "subject": " ".join((override.subject or message.title).split()),
        }
        if override.reply_to:
            envelope["reply_to"] = override.reply_to
        return [envelope]

    async def send(self, message: Message) -> Outcome:
        override = self._override(message)
        has_own = override is not None and bool(override.to or override.cc or override.bcc)
        if not has_own and not self.config.has_recipients:
            return Outcome.permanent(
                "no recipient: the channel has no 'to' and the template's {% block email %} named none"
            )
        return await super().send(message)

    def tune(self, plugin: Any) -> None:
        # Apprise spaces a plugin's sends 5.5s apart by default; an SMTP relay needs no such
        # gap, and rules have throttle/rate_limit for pacing people's inboxes.
        plugin.request_rate_per_sec = 0

    def prepare(self, message: Message) -> tuple[str, str]:
        override = self._override(message)
        subject = override.subject if override is not None and override.subject else message.title
        title = " ".join(subject.split())
        if self.config.format == "html":
            return title, html_document(title, message.body)
        return title, message.body

    def describe(self) -> str:
        count = len(self.config.to)
        who = f"{count} recipient{'s' if count != 1 else ''}" if count else "recipients from templates"
        return f"{self.name} (email via {redact_url(self.config.url)}, {who})"
