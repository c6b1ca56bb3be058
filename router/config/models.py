"""Pydantic models of rules.yaml, as docs/configuration.md documents them.

Structural validation lives here; cross references (a rule's channels, template and job, a
channel's type-specific options) are checked by :mod:`router.config.validate` once the plugin
registry is known.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from router.core.durations import Duration
from router.core.suggest import did_you_mean


def empty_list() -> list[Any]:
    """A new empty list: the ``default_factory`` of list fields.

    Not ``list`` itself: pydantic reads a default factory's signature, and a builtin's signature
    is parsed from text by the tokenizer, whose first use compiles a large regex (~5 ms of the
    start-up of every command that validates rules.yaml).
    """
    return []


def empty_dict() -> dict[str, Any]:
    """A new empty dict: the ``default_factory`` of mapping fields (see :func:`empty_list`)."""
    return {}


OPERATORS: tuple[str, ...] = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "regex", "contains", "exists")
"""Condition operators accepted under a rule's ``when:``."""


class StrictModel(BaseModel):
    """Base for every rules.yaml section: unknown keys are errors."""

    # defer_build: validators are built on first use, not at import (start-up of every command);
    # RouterConfig builds the sections it holds when the configuration is validated.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class RetryPolicy(StrictModel):
    """How often and how patiently a failed delivery is retried."""

    attempts: int = Field(5, ge=1, le=100, description="Total attempts including the first send.")
    backoff: Duration = Field(2.0, description="Delay before the first retry; doubles each attempt.")
    max_backoff: Duration = Field(600.0, description="Upper bound of the delay between attempts.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random +/- fraction applied to each delay.")


class BrokerConfig(StrictModel):
    """Where events come from: RabbitMQ when ``url`` is an amqp:// URL, else the embedded queue."""

    url: str = Field("", description="amqp://user:pass@host:5672/vhost, or empty for the embedded SQLite queue.")
    exchange: str = Field("events", description="Durable topic exchange applications publish to.")
    queue: str = Field("router", description="Durable queue the router consumes.")
    queue_type: Literal["classic", "quorum"] = "classic"
    bindings: list[str] = Field(default_factory=lambda: ["#"], description="Binding keys of the queue.")
    prefetch: int = Field(256, ge=1, le=65535, description="Unacknowledged events in flight per process.")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Larger event bodies are dead-lettered.")
    embedded_path: str = Field(".router/queue.db", description="SQLite file of the embedded queue.")


class StateConfig(StrictModel):
    """The state store: dedupe ledger, throttle counters, digests, delivery history."""

    url: str = Field("sqlite:///.router/state.db", description="sqlite:///path or redis://host:port/db.")
    idempotency_window: Duration = Field(7 * 86400.0, description="How long a sent delivery is remembered.")


class OnFailure(StrictModel):
    """Who hears about a dead letter: a template rendered with the failure, sent to ``channels``.

    See router/engine/failures.py; the template sees ``failure`` (reason, error, attempts, ...) besides
    ``event``, ``data``, ``rule`` and ``channel``.
    """

    template: str = Field(min_length=1, description="Template rendered for the failure notification.")
    channels: list[str] = Field(min_length=1, description="Channels that receive the failure notification.")


NO_FAILURE_NOTIFICATION = OnFailure.model_construct(template="", channels=[])
"""What a rule's ``on_failure: false`` stands for: no failure notification, whatever the defaults say."""


def _false_is_no_notification(value: Any) -> Any:
    # A before-validator rather than a union with Literal[False]: a mistake inside the mapping
    # is then reported once, not once more as "expected False".
    if value is True:  # "on" has no meaning of its own: say what is expected instead of "a mapping"
        raise PydanticCustomError(
            "on_failure_true", "expected a mapping {template, channels} or false (true is not a setting)"
        )
    return NO_FAILURE_NOTIFICATION if value is False else value


def _schema_allows_false(schema: dict[str, Any]) -> None:
    schema.setdefault("anyOf", []).append({"const": False})


class Defaults(StrictModel):
    """Defaults applied to every rule that does not set its own."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    on_failure: OnFailure | None = Field(
        None, description="Failure notification for every dead letter whose rule sets none (and for poison messages)."
    )


class ChannelSpec(BaseModel):
    """A named channel: ``type`` selects the channel plugin, the other keys are its options.

    The options are validated against the plugin's own config model by
    :func:`router.config.validate.validate_references`.
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    type: str = Field(description="Channel type, e.g. discord, slack, email, apprise, webhook, console.")

    @property
    def options(self) -> dict[str, Any]:
        """The channel's options (every key but ``type``)."""
        return dict(self.model_extra or {})


class DedupeSpec(StrictModel):
    """Skip events whose rendered key was seen within ``window``."""

    key: str = Field(description="Jinja expression template rendered per event, e.g. '{{ data.user.id }}'.")
    window: Duration


class ThrottleSpec(StrictModel):
    """Delay (never drop) events beyond ``limit`` per ``period`` for each key."""

    limit: int = Field(ge=1)
    period: Duration
    key: str | None = None
    burst: int | None = Field(None, ge=1)


class RateLimitSpec(StrictModel):
    """Drop (and count) events beyond ``limit`` per ``period`` for each key."""

    limit: int = Field(ge=1)
    period: Duration
    key: str | None = None


class DigestSpec(StrictModel):
    """Collect matching events per key and deliver them as one notification."""

    window: Duration
    max_events: int = Field(50, ge=1)
    key: str | None = None


Condition = dict[str, Any]
"""A normalised condition: ``{operator: operand}`` with one or more operators, all of which must hold."""


class Rule(StrictModel):
    """One routing rule."""

    name: str = Field(min_length=1)
    on: list[str] = Field(description="Event type patterns: '*' is one dotted segment, '**' any number.")
    when: dict[str, Condition] = Field(
        default_factory=empty_dict, description="Dotted path -> condition; all must hold."
    )
    template: str | None = None
    channels: list[str] = Field(default_factory=empty_list)
    job: str = "notify"
    with_: dict[str, Any] = Field(default_factory=empty_dict, alias="with")
    dedupe: DedupeSpec | None = None
    throttle: ThrottleSpec | None = None
    rate_limit: RateLimitSpec | None = None
    digest: DigestSpec | None = None
    retry: RetryPolicy | None = None
    on_failure: Annotated[OnFailure | None, BeforeValidator(_false_is_no_notification)] = Field(
        None,
        description="Failure notification for this rule's dead letters; false: none; default: defaults.on_failure.",
        json_schema_extra=_schema_allows_false,
    )
    stop: bool = False

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("when", mode="before")
    @classmethod
    def _normalise_conditions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        normalised: dict[Any, Any] = {}
        for path, condition in value.items():
            if isinstance(condition, dict) and condition and all(isinstance(k, str) for k in condition):
                unknown = [k for k in condition if k not in OPERATORS]
                if unknown:
                    # A custom error type carries path and operator so the loader can point at
                    # the operator key itself; the text is the same as before.
                    raise PydanticCustomError(
                        "unknown_operator",
                        "{path}: unknown operator '{operator}'{hint} (operators: {operators})",
                        {
                            "path": path,
                            "operator": unknown[0],
                            "hint": did_you_mean(unknown[0], OPERATORS),
                            "operators": ", ".join(OPERATORS),
                        },
                    )
                normalised[path] = condition
            else:
                normalised[path] = {"eq": condition}  # a bare value means eq
        return normalised

    @model_validator(mode="after")
    def _notify_needs_channels(self) -> Rule:
        if self.job == "notify" and not self.channels:
            raise ValueError("a rule with the notify job needs at least one entry in 'channels'")
        return self


class HmacAuthSpec(StrictModel):
    """POST /events must carry an HMAC of the raw body, hex-encoded, optionally prefixed ``sha256=``."""

    secret: SecretStr = Field(description="Shared secret, from the environment: '${ROUTER_INGEST_SECRET}'.")
    header: str = Field("X-Signature", min_length=1, description="Request header holding the signature.")
    algorithm: Literal["sha256", "sha512"] = "sha256"

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the HMAC secret must be at least 16 characters (try: openssl rand -hex 32)")
        return value


def bearer_long_enough(value: SecretStr | None) -> SecretStr | None:
    """A bearer token (ingest or console) must not be guessable: at least 16 characters."""
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("the bearer token must be at least 16 characters (try: openssl rand -hex 32)")
    return value


class IngestAuthSpec(StrictModel):
    """How POST /events authenticates requests: exactly one of ``bearer`` or ``hmac``."""

    bearer: SecretStr | None = Field(None, description="Token expected in 'Authorization: Bearer <token>'.")
    hmac: HmacAuthSpec | None = None

    @field_validator("bearer")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return bearer_long_enough(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> IngestAuthSpec:
        if (self.bearer is None) == (self.hmac is None):
            raise ValueError("set exactly one of 'bearer' or 'hmac'")
        return self


class IngestConfig(StrictModel):
    """The HTTP ingest endpoint (POST /events) of `router serve`."""

    auth: IngestAuthSpec | None = Field(None, description="Require a bearer token or an HMAC signature.")
    max_body_bytes: int | None = Field(
        None, ge=1, description="Largest request body read; default 4 x broker.max_body_bytes + 1 KiB."
    )
    # Limits against hostile or broken clients (issue 15): see router/ingest/limits.py.
    max_connections: int = Field(
        1000, ge=1, description="Open HTTP connections at once; kept below the open-file limit."
    )
    max_reading_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1,
        description="Request body bytes being read or held at once, over all requests; beyond it 503.",
    )
    header_timeout: Duration = Field(
        10.0, gt=0, description="Time a connection has to send a request's headers (also the idle keep-alive)."
    )
    body_timeout: Duration = Field(30.0, gt=0, description="Time a request has to send its whole body.")
    max_queued_events: int = Field(
        100_000, ge=1, description="Events waiting in the queue above which POST /events answers 503."
    )


class ActivityConfig(StrictModel):
    """The activity history (docs/activity.md): every event's story, kept in SQLite or PostgreSQL."""

    enabled: bool = Field(True, description="Record activity; `activity: false` turns it off.")
    url: str | None = Field(
        None,
        description="sqlite:///path or postgresql://user@host/db; default: activity.db beside rules.yaml.",
    )
    retention: Duration = Field(7 * 86400.0, description="Records older than this are deleted, continuously.")
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="The store is kept under this size, oldest first.")
    buffer: int = Field(100_000, ge=100, description="Records waiting to be written; beyond that, history is dropped.")


def _activity_flag(value: Any) -> Any:
    """``activity: false`` / ``true`` is short for ``{enabled: ...}``."""
    return {"enabled": value} if isinstance(value, bool) else value


class BasicAuthSpec(StrictModel):
    """HTTP basic authentication: a user and a password (from the environment)."""

    user: str = Field(min_length=1, description="User name.")
    password: SecretStr = Field(description="Password, from the environment: '${ROUTER_UI_PASSWORD}'.")


class UiAuthSpec(StrictModel):
    """How /api/ and /ui/ authenticate requests: exactly one of ``bearer`` or ``basic``."""

    bearer: SecretStr | None = Field(None, description="Token expected in 'Authorization: Bearer <token>'.")
    basic: BasicAuthSpec | None = None

    @field_validator("bearer")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return bearer_long_enough(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> UiAuthSpec:
        if (self.bearer is None) == (self.basic is None):
            raise ValueError("set exactly one of 'bearer' or 'basic'")
        return self


class UiConfig(StrictModel):
    """The JSON API (/api/) and web console (/ui/) on the `router serve --http` port."""

    auth: UiAuthSpec | None = Field(None, description="Required when --http binds beyond loopback.")


class RouterConfig(StrictModel):
    """The whole of rules.yaml."""

    version: Literal[1] = 1
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    activity: Annotated[ActivityConfig, BeforeValidator(_activity_flag)] = Field(default_factory=ActivityConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    templates: str = Field("templates", description="Template folder, relative to rules.yaml.")
    defaults: Defaults = Field(default_factory=Defaults)
    channels: dict[str, ChannelSpec] = Field(default_factory=empty_dict)
    rules: list[Rule] = Field(default_factory=empty_list)
    events: dict[str, Any] = Field(
        default_factory=empty_dict,
        description="Event type -> the fields of its data ('name: type', 'name?: type') or {schema: <JSON Schema>}.",
    )
    dry_run: bool = Field(
        False, description="Render and log every delivery instead of sending it (`router serve --dry-run` forces it)."
    )

    def retry_for(self, rule: Rule) -> RetryPolicy:
        """The retry policy in force for ``rule``."""
        return rule.retry or self.defaults.retry

    def on_failure_for(self, rule: Rule | None) -> OnFailure | None:
        """The failure notification in force for ``rule`` (None: the defaults'); None when there is none."""
        if rule is not None and rule.on_failure is not None:
            return None if rule.on_failure is NO_FAILURE_NOTIFICATION else rule.on_failure
        return self.defaults.on_failure
