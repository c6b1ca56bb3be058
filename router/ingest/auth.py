"""Authentication of `POST /events`: a bearer token or an HMAC signature of the raw body.

Configured under ``ingest.auth`` in rules.yaml, with the secret from the environment. The
comparison is constant-time (:func:`hmac.compare_digest`); the token and secret are registered
with :mod:`router.core.redact` so that no log record carries them, and no error message quotes
what the client sent. :class:`IngestGuard` follows reloads: it reads the configuration in
force on every request and rebuilds its checker only when that configuration changed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router.config.models import IngestAuthSpec, RouterConfig
from router.core.redact import register_secrets

BEARER_CHALLENGE = 'Bearer realm="router"'


class AuthError(Exception):
    """The request is not authenticated: 401 with ``message`` (and ``challenge`` as WWW-Authenticate)."""

    def __init__(self, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.challenge = challenge


class IngestAuth:
    """Checks one request against ``ingest.auth``.

    Bearer tokens are checked on the headers alone, before the body is read
    (:attr:`needs_body` is False); a signature needs the raw body.
    """

    def __init__(self, spec: IngestAuthSpec) -> None:
        self._token: bytes | None = None
        self._secret: bytes | None = None
        self._header = ""
        self._algorithm = "sha256"
        if spec.bearer is not None:
            token = spec.bearer.get_secret_value()
            register_secrets(token)
            self._token = token.encode()
        elif spec.hmac is not None:
            secret = spec.hmac.secret.get_secret_value()
            register_secrets(secret)
            self._secret = secret.encode()
            self._header = spec.hmac.header
            self._algorithm = spec.hmac.algorithm

    @property
    def needs_body(self) -> bool:
        """True when the check needs the raw body (HMAC)."""
        return self._secret is not None

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthError` unless the headers authenticate the request (as far as they can)."""
        if self._token is not None:
            value = headers.get("Authorization", "")
            scheme, _, token = value.partition(" ")
            if not value:
                raise AuthError("authentication required: send 'Authorization: Bearer <token>'", BEARER_CHALLENGE)
            if scheme.lower() != "bearer":
                raise AuthError(
                    "authentication required: the Authorization header must use the Bearer scheme",
                    BEARER_CHALLENGE,
                )
            if not hmac.compare_digest(token.strip().encode(), self._token):
                raise AuthError("invalid bearer token", f'{BEARER_CHALLENGE}, error="invalid_token"')
        elif self._secret is not None and not headers.get(self._header):
            raise AuthError(f"signature required: send the {self._algorithm} HMAC of the body in {self._header}")

    def check_body(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`AuthError` unless the signature header matches the HMAC of ``body``."""
        if self._secret is None:
            return
        given = headers.get(self._header, "").strip()
        prefix = f"{self._algorithm}="
        if given.lower().startswith(prefix):
            given = given[len(prefix) :]
        expected = hmac.new(self._secret, body, self._algorithm).hexdigest()
        # Compared as bytes: compare_digest refuses str with non-ASCII characters.
        if not hmac.compare_digest(given.lower().encode("utf-8", "replace"), expected.encode()):
            raise AuthError(f"invalid signature in {self._header}")


def sign(secret: str, body: bytes, algorithm: str = "sha256") -> str:
    """The signature header value a client sends for ``body``: ``sha256=<hex digest>``."""
    return f"{algorithm}={hmac.new(secret.encode(), body, algorithm).hexdigest()}"


def client_headers(spec: IngestAuthSpec | None, body: bytes) -> dict[str, str]:
    """The headers that authenticate ``body`` to a router configured with ``spec`` (for `router publish`)."""
    if spec is None:
        return {}
    if spec.bearer is not None:
        return {"Authorization": f"Bearer {spec.bearer.get_secret_value()}"}
    assert spec.hmac is not None
    return {spec.hmac.header: sign(spec.hmac.secret.get_secret_value(), body, spec.hmac.algorithm)}


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """What the ingest endpoint enforces under one configuration."""

    auth: IngestAuth | None
    max_request_bytes: int
    # Defaults of IngestConfig (router/config/models.py); see router/ingest/admission.py.
    max_reading_bytes: int = 32 * 1024 * 1024
    body_timeout: float = 30.0
    max_queued_events: int = 100_000


def default_max_request(max_event_bytes: int) -> int:
    """The request body limit when ``ingest.max_body_bytes`` is not set: room for a few events."""
    return max_event_bytes * 4 + 1024


class IngestGuard:
    """The :class:`IngestSettings` of the configuration in force, rebuilt after a reload changed it."""

    def __init__(self, config: Callable[[], RouterConfig], *, max_event_bytes: int) -> None:
        self._config = config
        self._max_event_bytes = max_event_bytes
        self._cached: tuple[RouterConfig, IngestSettings] | None = None
        self.settings()  # registers the secrets now, before any request is logged

    def settings(self) -> IngestSettings:
        config = self._config()
        cached = self._cached
        if cached is not None and cached[0] is config:
            return cached[1]
        ingest = config.ingest
        settings = IngestSettings(
            auth=IngestAuth(ingest.auth) if ingest.auth is not None else None,
            max_request_bytes=ingest.max_body_bytes or default_max_request(self._max_event_bytes),
            max_reading_bytes=ingest.max_reading_bytes,
            body_timeout=ingest.body_timeout,
            max_queued_events=ingest.max_queued_events,
        )
        self._cached = (config, settings)
        return settings
