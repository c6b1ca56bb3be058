"""Handling one event: decode, hooks, match, flow control, jobs, deliveries, dead letters, ack.

Owns: :mod:`.engine` (``Engine`` and its configuration generations), :mod:`.failures`
(failure notifications), :mod:`.dlq` (``router dlq``). May import flow, pipeline, runtime and
everything below; never ``app``, ``ingest`` or ``cli``.
"""
