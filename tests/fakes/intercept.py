"""Reroute the HTTP requests that apprise makes (through ``requests``) to local servers.

The rewrite happens in ``requests.adapters.HTTPAdapter.send``, below apprise: apprise builds
and sends its real request to ``https://discord.com/api/webhooks/...`` and the wire sees it at
``http://127.0.0.1:PORT/api/webhooks/...`` with the original host in a header.

This module is self-contained (standard library and requests only) so that
``autoload/sitecustomize.py`` can load it in a subprocess that has no ``tests`` package on
its path; see ``tests/fakes/__init__.py`` for both ways to use it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_VAR = "ROUTER_TEST_REDIRECT"
ORIGINAL_HOST_HEADER = "X-Router-Test-Original-Host"
AUTOLOAD_DIR = Path(__file__).resolve().parent / "autoload"

_redirects: dict[str, str] = {}
_lock = threading.Lock()


def parse_spec(spec: str) -> dict[str, str]:
    """``"discord.com=http://127.0.0.1:8001,hooks.slack.com=http://127.0.0.1:8002"`` as a mapping."""
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, target = item.partition("=")
        if not sep or not host.strip() or not target.strip().startswith(("http://", "https://")):
            raise ValueError(f"{ENV_VAR}: expected host=http://127.0.0.1:PORT, got {item!r}")
        mapping[host.strip().lower()] = target.strip().rstrip("/")
    return mapping


def format_spec(mapping: Mapping[str, str]) -> str:
    """The inverse of :func:`parse_spec`."""
    return ",".join(f"{host}={target}" for host, target in mapping.items())


def _target_for(host: str) -> str | None:
    current = _redirects
    host = host.lower()
    for name, target in current.items():
        if host == name or host.endswith("." + name):  # discordapp.com is its own entry
            return target
    return None


def rewrite(url: str) -> tuple[str, str] | None:
    """(new url, original host) when ``url``'s host is redirected, else None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    target = _target_for(host)
    if target is None:
        return None
    base = urlsplit(target)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, "")), host


def install() -> None:
    """Wrap ``HTTPAdapter.send`` once; requests to hosts without a redirect are untouched."""
    from requests.adapters import HTTPAdapter

    with _lock:
        original = HTTPAdapter.send
        if getattr(original, "_router_test_intercept", False):
            return

        @functools.wraps(original)
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            rewritten = rewrite(request.url)
            if rewritten is not None:
                request.url, host = rewritten
                request.headers[ORIGINAL_HOST_HEADER] = host
                kwargs["proxies"] = {}  # a proxy from the environment must not see test traffic
            return original(self, request, *args, **kwargs)

        send._router_test_intercept = True  # type: ignore[attr-defined]
        HTTPAdapter.send = send  # type: ignore[method-assign]


def set_redirects(mapping: Mapping[str, str]) -> None:
    """Replace the redirects: host (and its subdomains) -> base URL of a local server."""
    global _redirects
    install()
    _redirects = {host.lower(): target.rstrip("/") for host, target in mapping.items()}


@contextmanager
def redirect(mapping: Mapping[str, str]) -> Iterator[None]:
    """Add redirects while inside (they take precedence over the current ones); the previous come back after."""
    previous = dict(_redirects)
    set_redirects({**previous, **{host.lower(): target for host, target in mapping.items()}})
    try:
        yield
    finally:
        set_redirects(previous)


def install_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Install the redirects that ``ROUTER_TEST_REDIRECT`` names; False when it is unset."""
    spec = (environ if environ is not None else os.environ).get(ENV_VAR, "")
    if not spec.strip():
        return False
    set_redirects(parse_spec(spec))
    return True


def subprocess_env(mapping: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a subprocess whose apprise requests go to local servers."""
    env = dict(os.environ if base is None else base)
    env[ENV_VAR] = format_spec(mapping)
    existing = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(AUTOLOAD_DIR) + (os.pathsep + existing if existing else "")
    return env
