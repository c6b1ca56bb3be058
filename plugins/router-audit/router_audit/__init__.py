"""router-audit: an audit trail of events for notification-router.

Adds the job ``audit.record`` (writes each event it receives to SQLite or PostgreSQL) and
the template filter ``audit_ref`` (a short reference to an event's audit record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router import hookimpl
from router_audit.filters import audit_ref
from router_audit.job import AuditJob
from router_audit.options import AuditOptions

__version__ = "0.1.0"

__all__ = ["AuditJob", "AuditOptions", "audit_ref"]


@hookimpl
def register_jobs(register: Callable[[type[Any]], None]) -> None:
    """Register ``audit.record``."""
    register(AuditJob)


@hookimpl
def register_template_filters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``audit_ref``."""
    register("audit_ref", audit_ref)
