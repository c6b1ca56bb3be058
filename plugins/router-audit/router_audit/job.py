"""The ``audit.record`` job: write each event a rule matches to the audit table."""

from __future__ import annotations

import logging

from router.jobs.base import Job, JobContext
from router_audit.options import AuditOptions
from router_audit.records import AuditRow
from router_audit.stores import Store, open_store

log = logging.getLogger("router_audit")


class AuditJob(Job):
    """Record the event (id, type, source, time, subject, rule, data) once per (event, rule)."""

    name = "audit.record"
    With = AuditOptions

    def __init__(self) -> None:
        # The router builds one instance per configuration and closes it when the
        # configuration is replaced, so connections live here, one per destination. Creating
        # a store does no I/O (it connects on first write): the check-then-set in _store
        # cannot interleave with another task.
        self._stores: dict[tuple[str, str], Store] = {}

    def _store(self, options: AuditOptions) -> Store:
        key = (options.url.get_secret_value(), options.table)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = open_store(options)
        return store

    async def handle(self, ctx: JobContext) -> None:
        options = ctx.options
        if not isinstance(options, AuditOptions):
            raise TypeError(f"audit.record expects its options as AuditOptions, got {type(options).__name__}")
        inserted = await self._store(options).record(AuditRow.from_event(ctx.event, ctx.rule.name))
        if not inserted:
            log.debug(
                "event %s for rule %r was already recorded in %s", ctx.event.id, ctx.rule.name, options.describe()
            )

    async def aclose(self) -> None:
        """Close this job's connections (each reopens on its next write)."""
        stores = list(self._stores.values())
        self._stores.clear()
        for store in stores:
            await store.aclose()
