"""What every apprise-backed channel shares: one Apprise object, a thread pool, failure classification.

Apprise is synchronous. Each channel builds its ``apprise.Apprise`` object once, and runs
``notify()`` on a thread pool of its own, sized to the channel's ``concurrency``: a slow
provider then occupies its own threads and never the event loop, the default executor
(which aiohttp needs for DNS) or another channel's threads.

Apprise answers only True or False, so each call runs inside
:func:`router.channels.apprise.capture.capture`, which records the HTTP responses and SMTP errors
underneath it; the recording is classified into a retryable or permanent Outcome.

Message text is passed to apprise undeclared (``body_format=None``): apprise then sends it
verbatim, in the dialect the template wrote for this channel type, and only the channel's
own truncation applies.

A channel-native message (``Message.payload``: Discord embeds, Slack blocks from a template's
``{% block discord %}``) goes through the same ``notify()`` path: the channel wraps its
plugin's ``_send`` (the one method that posts a message) so that, for this call only, the body
posted is the native payload, keeping the routing keys apprise worked out (thread, channel,
username). Everything else stays apprise's: the HTTP request, Discord's 429 retry, the
rate-limit bookkeeping, and so the recording and classification of the response.
:meth:`AppriseBackedChannel.preview` runs the same path with the post replaced by a record of
the body, which is what `router render` shows. Every message post, native or apprise's, then
passes :meth:`AppriseBackedChannel.finalize_post` (Discord's ``allowed_mentions``, Slack's
mention markup: :mod:`router.channels.mentions`).

Why apprise still posts Discord and Slack messages (issue 14 item 5, measured with 300 posts to
a local server): apprise costs about 3-4 ms of CPU per message against 0.3 ms for a plain
aiohttp post, but the providers cap one webhook at 2.5 (Discord) and 1 (Slack) messages per
second, so the difference is about 1% of a core per channel at full rate; going native would
mean re-implementing apprise's Slack mrkdwn conversion and Discord field splitting, whose
payloads the wire tests pin. The private ``_send`` this wraps is pinned instead: apprise is
bounded in pyproject.toml and ``tests/test_apprise_contract.py`` fails when an upgrade moves
what this relies on.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field

from router.channels.base import Channel, ChannelConfig
from router.core.durations import Duration, format_duration
from router.core.errors import ConfigError, Problem
from router.core.message import Message, Outcome
from router.core.redact import install_log_filter, register_secrets, scrub

if TYPE_CHECKING:  # imported where used (a channel built, a message sent): start-up time of every command
    from concurrent.futures import ThreadPoolExecutor

    import apprise

logger = logging.getLogger(__name__)

ELLIPSIS = "…"

APP_NAME = "Notification Router"
"""What apprise calls the sender (User-Agent, Discord embed author, Slack footer, X-Application)."""

NATIVE_PLACEHOLDER = "."
"""The body handed to apprise when a native payload replaces what it would build: one line, no
markdown headings, so apprise makes exactly one post of it (per target)."""


@dataclass(slots=True)
class _SendOverride:
    """What the wrapped ``_send`` does in this thread's current notify(): post ``native``, or record."""

    native: dict[str, Any] | None
    recorded: list[dict[str, Any]] | None = None  # a preview: record the bodies, post nothing


_override: ContextVar[_SendOverride | None] = ContextVar("router_apprise_send_override", default=None)


def truncate(text: str, limit: int | None) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when it was cut."""
    if limit is None or len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


def truncate_measured(text: str, limit: int, cost: Callable[[str], int]) -> str:
    """Like :func:`truncate`, where each character counts ``cost(char)`` (escaping grows some)."""
    if sum(cost(c) for c in text) <= limit:
        return text
    budget = limit - cost(ELLIPSIS)
    used = 0
    end = 0
    for end, char in enumerate(text):  # noqa: B007 - `end` is read after the loop
        used += cost(char)
        if used > budget:
            break
    return text[:end].rstrip() + ELLIPSIS


class AppriseChannelConfig(ChannelConfig):
    """Options of every apprise-backed channel."""

    # URLs hold tokens and passwords: validation errors must not echo the input.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    timeout: Duration = Field(10.0, gt=0, le=300, description="Connect and read timeout of each request.")
    min_interval: Duration | None = Field(
        None,
        ge=0,
        le=3600,
        description=(
            "Pause apprise keeps between two requests to the service (best effort under concurrency); "
            "default: apprise's own for the service (Discord 0s, Slack 1.2s, most others 5.5s; email 0s here)."
        ),
    )


class AppriseBackedChannel(Channel):
    """Base class of channels that deliver through apprise (discord, slack, email, apprise).

    Subclasses implement :meth:`apprise_urls` and may override :meth:`secrets`,
    :meth:`asset_options`, :meth:`prepare` and :meth:`tune`. Channels that take a native payload
    set ``payload_model`` and ``payload_argument`` and implement :meth:`merge_native`.
    """

    Config: ClassVar[type[ChannelConfig]] = AppriseChannelConfig
    # Where the plugin's ``_send`` takes the JSON body (Discord: first argument, Slack: second);
    # None: the plugin has no such method (email) and no native payload or preview.
    payload_argument: ClassVar[int | None] = None
    # What the wrapped ``_send`` answers in a preview, as the plugin's own would on success.
    preview_result: ClassVar[Any] = True
    # The apprise plugin class (module, class name) every URL of this channel goes to. It is built
    # directly: finding a class by URL scheme makes apprise import all ~100 of its service
    # modules (~0.35 s of CPU at every start that builds a channel, `router render` among them).
    # None (``type: apprise``, any URL): apprise looks the scheme up.
    apprise_plugin: ClassVar[tuple[str, str] | None] = None

    def __init__(self, name: str, config: ChannelConfig) -> None:
        super().__init__(name, config)
        # Secrets first: building the apprise object may already log them.
        register_secrets(*self.secrets())
        install_log_filter()
        self._apprise = self._build()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- what subclasses provide ------------------------------------------------------

    @abstractmethod
    def apprise_urls(self) -> Sequence[tuple[str, Sequence[str]]]:
        """The apprise URLs to notify, each with its apprise tags."""

    def secrets(self) -> Iterable[str]:
        """Strings that must never be logged (tokens, passwords); registered with the log filter."""
        return ()

    def asset_options(self) -> dict[str, Any]:
        """Extra ``apprise.AppriseAsset`` options (colours, images, app name)."""
        return {}

    def prepare(self, message: Message) -> tuple[str, str]:
        """The (title, body) to hand to apprise: truncated to the provider's limits."""
        return message.title, message.body

    def tune(self, plugin: Any) -> None:
        """Adjust a freshly built apprise plugin object (rarely needed)."""

    def tag_filter(self) -> Any:
        """Which of the channel's URLs to notify (apprise's tag expression); all by default."""
        import apprise

        return apprise.common.MATCH_ALL_TAG

    def native_payload(self, message: Message) -> dict[str, Any]:
        """The native body to post for ``message`` (its ``payload``, with channel defaults filled in)."""
        return copy.deepcopy(message.payload or {})

    def merge_native(self, built: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
        """The body to post: ``native`` over the routing keys of the body apprise ``built``."""
        return {**native}

    def finalize_post(self, body: dict[str, Any], *, native: bool) -> dict[str, Any]:
        """The body actually posted, from the one apprise built or the merged native one.

        The place for what must hold for every message (Discord: ``allowed_mentions``; Slack:
        mention markup neutralised). ``body`` is the channel's own copy.
        """
        return body

    def is_message_post(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a ``_send`` call posts the message (not an upload or a lookup)."""
        return not kwargs.get("attach")

    @property
    def timeout(self) -> float:
        return float(getattr(self.config, "timeout", 10.0))

    # -- machinery --------------------------------------------------------------------

    def _build(self, urls: Sequence[tuple[str, Sequence[str]]] | None = None) -> apprise.Apprise:
        options: dict[str, Any] = {
            "app_id": APP_NAME,
            "app_desc": APP_NAME,
            # The router owns retries, timeouts and threads: apprise retries nothing, keeps
            # nothing on disk and runs each notify() in the calling thread.
            "default_service_retry": 0,
            "async_mode": False,
            "storage_mode": "memory",
            "service_timeout": 0,
        }
        import apprise  # here, not at the top: it costs every command's start-up ~0.15 s

        options.update(self.asset_options())
        asset = apprise.AppriseAsset(**options)
        apobj = apprise.Apprise(asset=asset)
        for url, tags in self.apprise_urls() if urls is None else urls:
            try:
                plugin = self._instantiate(url, asset, tags)
            except Exception as exc:
                raise self._setup_error(f"apprise rejected the URL: {scrub(str(exc), self.secrets())}") from None
            if plugin is None:
                raise self._setup_error("apprise does not support this URL")
            # The channel's timeout replaces apprise's 4s connect / 4s read defaults.
            plugin.socket_connect_timeout = self.timeout
            plugin.socket_read_timeout = self.timeout
            self.tune(plugin)
            target: Any = plugin  # `_send` is each plugin's own (not on NotifyBase)
            if self.payload_argument is not None and callable(getattr(target, "_send", None)):
                target._send = self._wrap_send(target._send)
            interval = getattr(self.config, "min_interval", None)
            if interval is not None:
                plugin.request_rate_per_sec = interval
            apobj.add(plugin)
        return apobj

    def _instantiate(self, url: str, asset: apprise.AppriseAsset, tags: Sequence[str]) -> Any:
        """The apprise plugin object for ``url``, or None when apprise cannot handle it."""
        import apprise

        if self.apprise_plugin is None:
            return apprise.Apprise.instantiate(url, asset=asset, tag=list(tags), suppress_exceptions=False)
        from apprise.utils.parse import parse_list

        module_name, class_name = self.apprise_plugin
        plugin_class: Any = getattr(importlib.import_module(module_name), class_name)
        scheme = url.partition("://")[0].lower()
        # What Apprise.instantiate does once its scheme lookup has found the class.
        if scheme not in plugin_class.schemas(plugin_class) or not plugin_class.enabled:
            return None
        results = plugin_class.parse_url(url.replace("/#", "/%23"))
        if not results:
            return None
        tag_set = set(parse_list(list(tags)))  # type: ignore[no-untyped-call]
        return plugin_class(**{**results, "tag": tag_set, "asset": asset})

    def _setup_error(self, message: str) -> ConfigError:
        return ConfigError([Problem(message, path=f"channels.{self.name}.url")])

    def _executor(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.concurrency,
                thread_name_prefix=f"router-{self.type_name}",
            )
        return self._pool

    @property
    def _deadline(self) -> float:
        # Apprise may make two requests (Discord retries a 429 once), each bounded by the
        # connect and read timeouts, and may wait out a provider's rate-limit window.
        return 4 * self.timeout + 15.0

    def _wrap_send(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """The plugin's ``_send``, posting the native payload (or recording, in a preview) when asked."""
        position = self.payload_argument
        assert position is not None

        def send(*args: Any, **kwargs: Any) -> Any:
            override = _override.get()
            if not self.is_message_post(args, kwargs):
                return original(*args, **kwargs)
            in_args = len(args) > position
            built = args[position] if in_args else kwargs.get("payload", {})
            native = override.native if override is not None else None
            body = self.merge_native(built, native) if native is not None else copy.copy(built)
            # Every message post, native or apprise's: the channel has the last word on mentions.
            body = self.finalize_post(body, native=native is not None)
            if override is not None and override.recorded is not None:
                override.recorded.append(copy.deepcopy(body))
                return self.preview_result
            if in_args:
                args = (*args[:position], body, *args[position + 1 :])
            else:
                kwargs["payload"] = body
            return original(*args, **kwargs)

        return send

    def _texts(self, message: Message) -> tuple[str, str, dict[str, Any] | None] | Outcome:
        """(title, body, native payload) to hand to apprise, or the Outcome of a message that cannot go."""
        if message.payload is not None and self.payload_argument is not None:
            return "", NATIVE_PLACEHOLDER, self.native_payload(message)
        title, body = self.prepare(message)
        if not body.strip():
            # Apprise refuses an empty body; a title alone becomes the body.
            title, body = "", title
        if not body.strip():
            return Outcome.permanent("empty message: the template rendered no title and no body")
        return title, body, None

    def apprise_for(self, message: Message) -> apprise.Apprise:
        """The Apprise object that sends ``message``: the channel's own, unless the message names its recipients."""
        return self._apprise

    def _notify_blocking(
        self, title: str, body: str, native: dict[str, Any] | None = None, apobj: apprise.Apprise | None = None
    ) -> Outcome:
        from router.channels.apprise.capture import capture, classify_capture

        token = _override.set(_SendOverride(native)) if native is not None else None
        try:
            with capture() as recorded:
                result = (apobj or self._apprise).notify(body=body, title=title, tag=self.tag_filter())
        finally:
            if token is not None:
                _override.reset(token)
        return classify_capture(bool(result), recorded, timeout=self.timeout)

    def preview(self, message: Message) -> list[dict[str, Any]] | None:
        """The JSON bodies :meth:`send` would post for ``message`` (one per request), posting nothing."""
        if self.payload_argument is None:
            return None
        texts = self._texts(message)
        if isinstance(texts, Outcome):
            return []
        title, body, native = texts
        recorded: list[dict[str, Any]] = []
        token = _override.set(_SendOverride(native, recorded))
        try:
            self._apprise.notify(body=body, title=title, tag=self.tag_filter())
        finally:
            _override.reset(token)
        return recorded

    async def send(self, message: Message) -> Outcome:
        """Deliver through apprise on the channel's threads; never raises for delivery failures."""
        if self._closed:
            return Outcome.retryable("channel closed (configuration reloaded or shutting down)")
        texts = self._texts(message)
        if isinstance(texts, Outcome):
            return texts
        title, body, native = texts
        import asyncio  # loaded already: send() runs on its loop

        loop = asyncio.get_running_loop()
        try:
            apobj = self.apprise_for(message)
            future = loop.run_in_executor(self._executor(), self._notify_blocking, title, body, native, apobj)
            outcome = await asyncio.wait_for(future, self._deadline)
        except TimeoutError:
            outcome = Outcome.retryable(f"timeout after {format_duration(self._deadline)}")
        except RuntimeError as exc:  # the pool was shut down by aclose() meanwhile
            outcome = Outcome.retryable(f"channel closed ({type(exc).__name__})")
        except Exception as exc:  # a crash inside apprise or a plugin is not the caller's problem
            logger.warning("channel %s: apprise raised %s", self.name, type(exc).__name__)
            outcome = Outcome.retryable(f"unexpected error ({type(exc).__name__})")
        if not outcome.ok:
            logger.debug("channel %s: %s (%s)", self.name, outcome.reason, outcome.status)
        return outcome

    async def aclose(self) -> None:
        """Stop accepting sends and release the thread pool (running sends finish on their own)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def guess_type(url: str) -> str | None:
    """The channel type a URL belongs to (``discord``, ``slack``, ``email``), to suggest the right one."""
    lowered = url.strip().lower()
    if lowered.startswith("discord://") or re.match(r"^https?://([\w-]+\.)?discord(app)?\.com/", lowered):
        return "discord"
    if lowered.startswith("slack://") or re.match(r"^https?://hooks\.slack(-gov)?\.com/", lowered):
        return "slack"
    if lowered.startswith(("mailto:", "mailtos:")):
        return "email"
    return None


def wrong_type_hint(url: str, expected: str) -> str:
    """`` (this looks like a slack URL: use `type: slack` for it)`` when the URL belongs elsewhere."""
    guessed = guess_type(url)
    if guessed and guessed != expected:
        article = "an" if guessed[0] in "aeiou" else "a"
        return f" (this looks like {article} {guessed} URL: use `type: {guessed}` for it)"
    return ""
