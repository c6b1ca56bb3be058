"""The plugin system: hook specifications, the pluggy manager, the built-ins and what was registered.

Owns: :mod:`.hookspecs` (one documented hook per function), :mod:`.manager` (entry points,
``ROUTER_LOAD_PLUGINS``, failure isolation, ``Hooks`` for per-event hooks), :mod:`.defaults`
(the built-ins, registered as a default plugin named ``router.builtins``), :mod:`.registry`.
May import channels, jobs and the layers below them.

``build_registry``, ``get_plugin_manager`` and ``Hooks`` are importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.plugins.manager import Hooks, build_registry, get_plugin_manager

__all__ = ["Hooks", "build_registry", "get_plugin_manager"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing router.plugins.hookspecs does not load every channel.
    if name in __all__:
        from router.plugins import manager

        return getattr(manager, name)
    raise AttributeError(f"module 'router.plugins' has no attribute {name!r}")
