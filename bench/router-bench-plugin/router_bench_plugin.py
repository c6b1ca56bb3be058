"""router-bench-plugin: a ``null`` channel for the benchmarks in ``bench/``.

It registers through the same ``register_channels`` hook as any third-party plugin, so a
benchmark that routes to it runs exactly the path a user's router runs (decode, match, render,
idempotency check, hooks, concurrency bound, send, record, acknowledge) with the channel's
own I/O taken out.

Each channel counts what it was sent and, when ``report`` names a file, writes its figures
there as JSON: at most every ``report_interval`` seconds while messages arrive, and once more
when the router closes the channel. Figures: ``count`` (messages sent), ``first`` and ``last``
(``time.monotonic()`` of the first and last send; CLOCK_MONOTONIC is system-wide on Linux, so
another process can compare them with its own clock), ``cpu_first`` and ``cpu_last``
(CPU time of the router process, every thread, and of its child processes, such as the
activity writer, at the first send and at the ``expect``-th) and ``pid``. The document is rewritten in
place with one ``pwrite`` of a fixed-size, space-padded record (a few microseconds, where
creating and renaming a file cost the event loop milliseconds); a reader that catches it
half-written gets invalid JSON and reads again::

    channels:
      sink: {type: null, report: /tmp/null-report.json}
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import ClassVar

from pydantic import Field

from router import Channel, ChannelConfig, Message, Outcome, hookimpl

RECORD = 256  # bytes of the report record: JSON padded with spaces
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_time() -> float:
    """CPU seconds of this process (every thread) and of its running children (the activity writer).

    Children count so that work moved out of the process is not reported as saved. Read from
    /proc at the two stamps only: a few hundred microseconds each.
    """
    total = time.process_time()
    pid = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children = listing.read().split()
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it exited between the listing and the read
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


class NullConfig(ChannelConfig):
    """Options of a ``null`` channel."""

    report: str | None = Field(None, description="File the channel writes its count to (JSON).")
    report_interval: float = Field(0.05, gt=0, description="Seconds between two writes of the report.")
    expect: int | None = Field(None, ge=1, description="Stamp the CPU time (and report) when this many were sent.")


class NullChannel(Channel):
    """Accepts every message at once and counts it: no network, no disk on the send path."""

    type_name: ClassVar[str] = "null"
    Config: ClassVar[type[ChannelConfig]] = NullConfig

    config: NullConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        super().__init__(name, config)
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_first: float | None = None
        self.cpu_last: float | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._written = -1
        self._fd: int | None = None

    async def send(self, message: Message) -> Outcome:
        now = time.monotonic()
        if self.first is None:
            self.first, self.cpu_first = now, cpu_time()
        self.last = now
        self.count += 1
        if self.count == self.config.expect:
            # Stamped once: reading CPU times takes system calls, too dear to make on every send.
            self.cpu_last = cpu_time()
            self.write_report()
        if self._reporter is None and self.config.report:
            self._reporter = asyncio.create_task(self._report_loop())
        return Outcome.sent()

    def write_report(self) -> None:
        """Write the figures to the report file, if they changed."""
        if not self.config.report or self._written == self.count:
            return
        if self._fd is None:
            self._fd = os.open(self.config.report, os.O_WRONLY | os.O_CREAT, 0o644)
        document = {
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "cpu_first": self.cpu_first,
            "cpu_last": self.cpu_last,
            "pid": os.getpid(),
        }
        os.pwrite(self._fd, json.dumps(document).encode().ljust(RECORD, b" "), 0)
        self._written = self.count

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_interval)
            self.write_report()

    async def aclose(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
        self.write_report()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def describe(self) -> str:
        return f"{self.name} (null: counts, sends nothing)"


@hookimpl
def register_channels(register):  # type: ignore[no-untyped-def]
    register(NullChannel)
