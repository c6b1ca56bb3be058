"""The ``audit.record`` job: write each event a rule matches to the audit table."""

from __future__ import annotations

import logging

from router.jobs.base import Job, JobContext
from router_audit.options import AuditOptions
from router_audit.records import AuditRow
from router_audit.stores import Store, open_store

log = logging.getLogger("router_audit")

# The router may build a job instance per event, so connections are kept per process, one
# per destination, rather than per instance. Creating a store does no I/O (it connects on
# first write), so the check-then-set below cannot interleave with another task.
_STORES: dict[tuple[str, str], Store] = {}


def store_for(options: AuditOptions) -> Store:
    """The shared store of ``options.url`` and ``options.table``."""
    key = (options.url.get_secret_value(), options.table)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = open_store(options)
    return store


class AuditJob(Job):
    """Record the event (id, type, source, time, subject, rule, data) once per (event, rule)."""

    name = "audit.record"
    With = AuditOptions

    async def handle(self, ctx: JobContext) -> None:
        options = ctx.options
        if not isinstance(options, AuditOptions):
            raise TypeError(f"audit.record expects its options as AuditOptions, got {type(options).__name__}")
        inserted = await store_for(options).record(AuditRow.from_event(ctx.event, ctx.rule.name))
        if not inserted:
            log.debug(
                "event %s for rule %r was already recorded in %s", ctx.event.id, ctx.rule.name, options.describe()
            )

    async def aclose(self) -> None:
        """Close every audit connection of this process (each reopens on its next write)."""
        stores = list(_STORES.values())
        _STORES.clear()
        for store in stores:
            await store.aclose()
