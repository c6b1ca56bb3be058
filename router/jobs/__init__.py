"""Job plugins: the base class and the built-in ``notify`` job."""

from router.jobs.base import Job, JobContext, NoOptions

__all__ = ["Job", "JobContext", "NoOptions"]
