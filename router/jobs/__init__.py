"""Job plugins: the base class and the built-in ``notify`` job."""

from router.config.job_options import ChannelRef
from router.jobs.base import Job, JobContext, JobState, NoOptions

__all__ = ["ChannelRef", "Job", "JobContext", "JobState", "NoOptions"]
