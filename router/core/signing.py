"""Authentication of the records the router writes for itself (retries, throttled and digest jobs,
dead letters): an HMAC-SHA256 with a key only the router holds.

Anyone allowed to publish on the broker's vhost can put a message on ``<queue>.retry`` or
``<queue>.dead``; without a signature such a record would be delivered as if the router had
scheduled it, skipping rules, schemas and templates. Every writer of a record
(:meth:`router.core.records.RetryRecord.to_bytes`) signs it and every reader
(:meth:`~router.core.records.RetryRecord.from_bytes`) verifies it, through this module only.

A signed record is ``RR1.<key id>.<hex HMAC-SHA256>.<JSON>``; the key id (8 hex digits of the
key's SHA-256) picks the key, so old keys can still verify during a rotation.

Keys, in order of precedence:

- ``ROUTER_RECORD_KEY`` (at least 16 characters): the signing key; ``ROUTER_RECORD_KEYS_PREVIOUS``
  (comma-separated): keys still accepted for verification (rotation's grace period).
- else the file ``.router/record.key`` beside rules.yaml, created (mode 0600) with 32 random bytes
  on first start: its first line signs, further lines are previous keys still accepted.

A process that never installs a key ring (a library user, a test) gets a random key of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from router.core.errors import DecodeError
from router.core.redact import register_secrets

MAGIC = b"RR1."
KEY_FILE = "record.key"
ENV_KEY = "ROUTER_RECORD_KEY"
ENV_PREVIOUS = "ROUTER_RECORD_KEYS_PREVIOUS"
MIN_KEY_CHARS = 16
_MAC_HEX = 64
_KID_HEX = 8


class ForgedRecord(DecodeError):
    """A record without a valid signature of a key this router holds: never delivered."""


def key_id(key: bytes) -> bytes:
    """The short public name of a key, written in front of each signature it makes."""
    return hashlib.sha256(key).hexdigest()[:_KID_HEX].encode()


@dataclass
class KeyRing:
    """The signing key and every key accepted for verification (the signing key included)."""

    current: bytes
    previous: Sequence[bytes] = ()
    _by_id: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for key in (self.current, *self.previous):
            self._by_id[key_id(key)] = key

    def sign(self, payload: bytes) -> bytes:
        """``payload`` with its signature in front."""
        mac = hmac.digest(self.current, payload, "sha256").hex().encode()  # one-shot: no HMAC object
        return b"".join((MAGIC, key_id(self.current), b".", mac, b".", payload))

    def open(self, body: bytes) -> bytes:
        """The payload of a signed ``body``; raises :class:`ForgedRecord` when it does not verify."""
        if not body.startswith(MAGIC):
            raise ForgedRecord("the record is not signed")
        head = len(MAGIC)
        kid = body[head : head + _KID_HEX]
        mac = body[head + _KID_HEX + 1 : head + _KID_HEX + 1 + _MAC_HEX]
        payload = body[head + _KID_HEX + 1 + _MAC_HEX + 1 :]
        key = self._by_id.get(kid)
        if key is None:
            raise ForgedRecord("the record is signed with a key this router does not hold")
        expected = hmac.digest(key, payload, "sha256").hex().encode()
        if not hmac.compare_digest(mac, expected):
            raise ForgedRecord("the record's signature does not match its content")
        return payload

    def including(self, other: KeyRing) -> KeyRing:
        """This ring, still accepting ``other``'s keys (keys held earlier by this process)."""
        previous = [*self.previous, *(k for k in other._by_id.values() if k != self.current)]
        return KeyRing(self.current, previous)


_ring = KeyRing(secrets.token_bytes(32))


def ring() -> KeyRing:
    """The key ring in force in this process."""
    return _ring


def install(new: KeyRing) -> None:
    """Sign with ``new`` from now on; keys in force before stay accepted for verification."""
    global _ring
    _ring = new.including(_ring)


def load_keyring(folder: Path, env: Mapping[str, str] | None = None) -> KeyRing:
    """The key ring from the environment, else from ``folder/record.key`` (created when missing).

    Raises ValueError naming the variable or the file when a key is unusable.
    """
    env = os.environ if env is None else env
    configured = env.get(ENV_KEY, "")
    if configured:
        if len(configured) < MIN_KEY_CHARS:
            raise ValueError(f"{ENV_KEY} must be at least {MIN_KEY_CHARS} characters")
        previous_text = [k.strip() for k in env.get(ENV_PREVIOUS, "").split(",") if k.strip()]
        register_secrets(configured, *previous_text)  # scrubbed from logs and output like any secret
        return KeyRing(configured.encode(), [k.encode() for k in previous_text])
    path = folder / KEY_FILE
    lines = _read_or_create(path)
    keys = []
    for number, line in enumerate(lines, 1):
        try:
            keys.append(bytes.fromhex(line))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a hex key") from None
    register_secrets(*lines)
    if not keys or any(len(k) < MIN_KEY_CHARS for k in keys):
        raise ValueError(f"{path}: expected one hex key of at least {MIN_KEY_CHARS} bytes per line")
    return KeyRing(keys[0], keys[1:])


def _make_private_dirs(folder: Path) -> None:
    # core cannot import support/private_files.py: the same, for the key's folder.
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)


def _read_or_create(path: Path) -> list[str]:
    _make_private_dirs(path.parent)
    try:
        # O_EXCL: two processes starting at once agree on the first one's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # the creator may not have written its line yet
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if lines:
            return lines
        time.sleep(0.01)
    return []
