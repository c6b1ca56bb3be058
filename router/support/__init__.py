"""Machinery with no domain knowledge: metrics, logs, slots, deadlines, on-disk caches.

Owns: :mod:`.metrics` (every Prometheus metric; hand-written exposition), :mod:`.logs`,
:mod:`.slots`, :mod:`.deadlines`, :mod:`.disk_cache`, :mod:`.sqlite_worker` (the one SQLite writer
thread, shared by the state store and the embedded queue), :mod:`.linear_regex` (RE2: regular
expressions in linear time), :mod:`.fast_json` (compact JSON through orjson). Imports only ``core``.
"""
