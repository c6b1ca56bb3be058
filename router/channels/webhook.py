"""POST (or PUT/PATCH) each message as JSON to any URL: the high-throughput path.

Each channel keeps a pool of kept-alive connections as large as its ``concurrency``, created
lazily inside the running loop: no thread, no per-message connection. A plain ``http://`` URL
(no credentials in it) goes through :mod:`router.channels.http1`, a request written as one
``bytes`` and its reply parsed by llhttp; ``https://`` and URLs with credentials go through
aiohttp (TLS, basic auth). Header values and the URL's credentials are secrets; reasons and logs show the
URL as scheme and host only. Each request carries an ``Idempotency-Key`` header, stable per
(event, rule, channel) across retries and redeliveries (a configured header of that name wins).

Redirects: by default none is followed; a 3xx answer is a permanent failure naming its status
and the host it points to (the message was not delivered). With ``follow_redirects:
same-origin`` a redirect to the same scheme, host and port is followed (the same method, body
and headers, up to :data:`MAX_REDIRECTS` hops); one to another origin is still a permanent
failure, so the body and the configured (secret) headers never reach another origin.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import orjson
from pydantic import ConfigDict, Field, field_validator

from router.channels.base import Channel, ChannelConfig
from router.channels.classify import classify_exception, classify_status
from router.config.models import empty_dict
from router.core.durations import Duration
from router.core.message import Message, Outcome
from router.core.redact import install_log_filter, redact_url, register_secrets

if TYPE_CHECKING:  # imported when the first request is sent: start-up time of every command
    import asyncio

    import aiohttp

    from router.channels.http1 import Http1Client
    from router.support.deadlines import Deadlines

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_META = "idempotency_key"  # set by the router's SkipIfSent stage (router/pipeline/idempotency.py)

_ORJSON_AS_STANDARD = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_BODY_LIMIT = 65_536
MAX_REDIRECTS = 5
"""Same-origin redirects followed for one send before it fails."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Path segments this long and mixed are tokens (as in https://hooks.example.com/T0K3N...).
_TOKEN_LIKE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~]{16,}$")
# Characters left as they are in a request target: RFC 3986's reserved and unreserved, and "%"
# (a URL written already escaped stays as written); anything else (a space, non-ASCII) is escaped.
_TARGET_SAFE = "/?#[]@!$&'()*+,;=-._~%:"


async def _drain(response: aiohttp.ClientResponse) -> bytes:
    """Read the response body (up to a limit): a fully read response returns its connection to the pool."""
    chunks: list[bytes] = []
    size = 0
    while size < _BODY_LIMIT:
        chunk = await response.content.readany()
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:_BODY_LIMIT]


class WebhookConfig(ChannelConfig):
    """Options of a ``webhook`` channel::

    audit-hook:
      type: webhook
      url: https://hooks.example.com/router
      headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
      method: POST                    # PUT and PATCH too
      timeout: 10s
      concurrency: 32                 # also the size of the connection pool
      follow_redirects: never         # or same-origin
    """

    # The URL and header values hold secrets: validation errors must not echo the input.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(description="http(s) URL the message is sent to.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=empty_dict, description="Extra request headers; values are secrets (never logged)."
    )
    timeout: Duration = Field(10.0, gt=0, le=300, description="Whole-request timeout.")
    payload: Literal["message", "body"] = Field(
        "message",
        description=(
            "message: JSON {title, body, meta}; body: the rendered body sent as it is (e.g. a template "
            "that renders an API's own JSON), with content_type."
        ),
    )
    content_type: str = Field("application/json", description="Content-Type of payload: body.")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    follow_redirects: Literal["never", "same-origin"] = Field(
        "never",
        description=(
            "never: a 3xx answer is a permanent failure naming its status and target host; same-origin: "
            "follow redirects to the same scheme, host and port (same method, body and headers, up to 5), "
            "and fail on any other. The body and headers are never sent to another origin."
        ),
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if "\n" in header or "\r" in header:
                raise ValueError(f"the value of header {name!r} contains a line break")
        return value


class WebhookChannel(Channel):
    """Sends each message as an HTTP request (plain http: :mod:`router.channels.http1`; else aiohttp)."""

    type_name: ClassVar[str] = "webhook"
    Config: ClassVar[type[ChannelConfig]] = WebhookConfig

    config: WebhookConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, WebhookConfig):
            raise TypeError(f"WebhookChannel needs a WebhookConfig, got {type(config).__name__}")
        super().__init__(name, config)
        register_secrets(*self.secrets())
        install_log_filter()
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._client: Http1Client | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: Deadlines | None = None  # with the client: it imports asyncio (start-up time)
        self._target = _plain_target(self.config.url)  # worked out once: the URL of nearly every request
        self._closed = False
        self._own_key_header = any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in self.config.headers)

    def secrets(self) -> list[str]:
        """Header values, the URL's password and query values, and token-like path segments."""
        parts = urlsplit(self.config.url)
        found = list(self.config.headers.values())
        if parts.password:
            found.append(parts.password)
        found += [v for _, v in parse_qsl(parts.query) if v]
        found += [s for s in parts.path.split("/") if _TOKEN_LIKE.match(s)]
        return found

    def _get_session(self) -> aiohttp.ClientSession:
        import asyncio

        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self.config.concurrency,
                limit_per_host=self.config.concurrency,
                ssl=self.config.verify_tls,  # False: no certificate check
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            )
            self._session_loop = loop
        return self._session

    def _get_client(self) -> Http1Client:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from router.channels.http1 import Http1Client

            parts = urlsplit(self.config.url)
            assert parts.hostname is not None  # the config's validator requires a host
            self._client = Http1Client(
                parts.hostname, parts.port or 80, limit=self.config.concurrency, body_limit=_BODY_LIMIT
            )
            self._client_loop = loop
        return self._client

    def _encode(self, message: Message) -> tuple[bytes, str]:
        if self.config.payload == "body":
            return message.body.encode("utf-8"), self.config.content_type
        document = {"title": message.title, "body": message.body, "meta": message.meta}
        try:
            # default=str: meta may hold datetimes and other values JSON has no type for; the
            # pass-through options keep orjson's output what the standard library's would be.
            return orjson.dumps(document, default=str, option=_ORJSON_AS_STANDARD), "application/json"
        except orjson.JSONEncodeError:  # non-string keys, integers past 64 bits: the standard path
            return json.dumps(document, default=str, ensure_ascii=False).encode("utf-8"), "application/json"

    async def send(self, message: Message) -> Outcome:
        """Send one request; classify its status or its failure. Never raises for delivery failures."""
        if self._closed:
            return Outcome.retryable("channel closed (configuration reloaded or shutting down)")
        try:
            data, content_type = self._encode(message)
        except (TypeError, ValueError) as exc:
            return Outcome.permanent(f"message cannot be encoded ({type(exc).__name__})")
        headers = {"Content-Type": content_type, **self.config.headers}
        key = message.meta.get(IDEMPOTENCY_META)
        if isinstance(key, str) and key and not self._own_key_header:
            # The same on every retry and redelivery of this (event, rule, channel): a receiver
            # that keeps the keys it has processed turns at-least-once into exactly-once.
            headers[IDEMPOTENCY_HEADER] = key
        try:
            outcome = await self._request(data, headers)
        except (OSError, TimeoutError) as exc:
            outcome = classify_exception(exc, timeout=self.config.timeout)
        except Exception as exc:  # aiohttp's ClientError, or a bug in a client or here
            if _is_client_error(exc):
                outcome = classify_exception(exc, timeout=self.config.timeout)
            else:
                logger.warning("channel %s: unexpected %s while sending", self.name, type(exc).__name__)
                outcome = Outcome.retryable(f"unexpected error ({type(exc).__name__})")
        if not outcome.ok:
            logger.debug("channel %s: %s (%s)", self.name, outcome.reason, outcome.status)
        return outcome

    async def _request(self, data: bytes, headers: dict[str, str]) -> Outcome:
        """The request, and the same-origin redirects the channel allows; the classified answer."""
        url = self.config.url
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            status, response_headers, body = await self._exchange(url, data, headers)
            location = response_headers.get("location")
            if status not in _REDIRECTS or not location:
                return classify_status(status, response_headers, body)
            target = urljoin(url, location)
            host = urlsplit(target).hostname or "?"
            if self.config.follow_redirects == "never":
                return Outcome.permanent(
                    f"HTTP {status} redirect to {host} not followed (the channel's follow_redirects is never)"
                )
            if _origin(target) != origin:
                return Outcome.permanent(
                    f"HTTP {status} redirect to another origin ({host}) not followed: follow_redirects is same-origin"
                )
            url = target
        return Outcome.permanent(f"more than {MAX_REDIRECTS} redirects (last HTTP {status})")

    async def _exchange(self, url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One request to ``url``: (status, headers with lower-case names, body up to the limit)."""
        target = self._target if url is self.config.url else _plain_target(url)
        if target is not None:
            if self._deadlines is None:
                from router.support.deadlines import Deadlines

                # One sweeping timer for every request in flight (asyncio.timeout: a timer each),
                # at most a twentieth of the timeout late.
                self._deadlines = Deadlines(resolution=min(0.25, max(0.001, self.config.timeout / 20)))
            async with self._deadlines.limit(self.config.timeout):
                reply = await self._get_client().request(self.config.method, target, headers, data)
            return reply.status, reply.headers, reply.body
        session = self._get_session()
        # allow_redirects=False: aiohttp would follow to any host, re-sending body and headers.
        async with session.request(
            self.config.method, url, data=data, headers=headers, allow_redirects=False
        ) as response:
            body = await _drain(response)
            return response.status, {k.lower(): v for k, v in response.headers.items()}, body

    async def aclose(self) -> None:
        """Close the connection pools."""
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    def describe(self) -> str:
        return f"{self.name} (webhook {self.config.method} {redact_url(self.config.url)})"


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _plain_target(url: str) -> str | None:
    """The request target (path and query, escaped) when :mod:`router.channels.http1` sends to
    ``url`` (http://, no credentials, an ASCII host); None when aiohttp does."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or "@" in parts.netloc or not parts.netloc.isascii():
        return None
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    return target


def _is_client_error(error: Exception) -> bool:
    """aiohttp's ClientError, without importing aiohttp when only plain http was used."""
    import sys

    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(error, aiohttp.ClientError)
