"""Compiling many templates at once, shared with forked worker processes (a cold load of a large configuration).

Jinja parses, generates Python source and compiles each template in ~1.5 ms of CPU, all of it
Python holding the GIL: a thousand templates are most of a cold load. A :class:`SharedMap`
runs such work in forked children *and* in this process, each taking the next item from a
shared queue; a child sends its results back through a pipe with marshal (code objects
included, as the on-disk cache stores them) and exits. The children can start early (while
this process still reads rules.yaml) and this process joins them when it is free.

Only where forking is safe and worth it: Linux, more than one CPU, enough items, and no
other thread in this process (a thread may hold a lock the child would wait for forever, so a
reload in a serving router, which has threads, compiles in-process). An item whose work raised
gets ``None``, and so does every item of a child that failed: the caller then does that item
in-process, the way it always did, so errors are reported exactly as without workers. A child
never outlives the work: it is killed and reaped when the parent stops early or is interrupted.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MIN_ITEMS_PER_PROCESS = 50
"""Fewer items than this per process (~1.5 ms each) and a fork (a few ms, more with a large heap) costs more than it saves."""


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fork_is_safe() -> bool:
    """Whether this process can fork a worker: Linux, and this is its only (and main) thread.

    Linux only: on macOS a forked child of a process that loaded system frameworks may crash
    (Python itself spawns there), and elsewhere there is no fork.
    """
    return (
        sys.platform.startswith("linux")
        and threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
    )


def processes_for(items: int, processes: int | None = None) -> int:
    """How many processes (this one included) a :class:`SharedMap` would use for ``items`` items."""
    # An explicit number (tests) skips the minimum of items per process.
    count = min(available_cpus(), items // MIN_ITEMS_PER_PROCESS) if processes is None else min(processes, items)
    if count < 2 or not fork_is_safe():
        return 1
    return count


_TOKEN = struct.Struct("=I")
_SIZE = struct.Struct("=Q")  # a child's answer: its size, then its results (marshal)
_MAX_TOKENS = 1024  # 4 KiB: the whole queue fits in any pipe's buffer, written before anyone reads


class SharedMap:
    """``function(item)`` for each item, shared by forked children (from now) and this process (from :meth:`join`).

    The work is a queue of item numbers in a pipe, written at once before the children are
    forked: each process (the children as soon as they start, this one when it joins) reads the
    next number and does that item, until the queue is empty. A pipe hands each read to one
    reader only, so every item is done once, by whoever is free. Results must be values
    marshal can carry (code objects, str, tuples, lists, dicts...).
    """

    def __init__(self, function: Callable[[T], Any], items: Sequence[T], *, processes: int | None = None) -> None:
        self._function: Callable[[Any], Any] = function
        self._items: Sequence[Any] = items
        self._chunk = max(1, -(-len(items) // _MAX_TOKENS))  # items per queue entry
        self._queue: int | None = None
        self._children: list[_Child] = []
        count = processes_for(len(items), processes)
        if count > 1:
            self._start(count - 1)

    @property
    def children(self) -> int:
        """Worker processes started (and not yet stopped)."""
        return len(self._children)

    def _start(self, children: int) -> None:
        tokens = b"".join(_TOKEN.pack(start) for start in range(0, len(self._items), self._chunk))
        read, write = os.pipe()
        try:
            os.set_blocking(write, False)
            written = os.write(write, tokens)
        except OSError:
            written = 0
        finally:
            os.close(write)  # nobody holds the write end: an empty queue reads as its end
        self._queue = read
        if written != len(tokens):  # a pipe smaller than 4 KiB: do it all here
            self.close()
            return
        try:
            for _ in range(children):
                self._children.append(_Child.start(self._work))
        except OSError:  # fork failed (no memory, process limit): the others and this process share it
            if not self._children:
                self.close()

    def _work(self) -> list[tuple[int, Any]]:
        """Take items from the queue until it is empty: (item number, result) for each."""
        done = []
        queue = self._queue
        assert queue is not None
        while token := os.read(queue, _TOKEN.size):
            (start,) = _TOKEN.unpack(token)
            for i in range(start, min(start + self._chunk, len(self._items))):
                done.append((i, _attempt(self._function, self._items[i])))
        return done

    def join(self) -> list[Any]:
        """Every item's result, in order; ``None`` where the work raised or its worker failed."""
        results: list[Any] = [None] * len(self._items)
        try:
            if self._queue is None:
                return [_attempt(self._function, item) for item in self._items]
            for i, value in self._work():
                results[i] = value
            for child in self._children:
                values = child.collect()
                for entry in values or ():
                    if (
                        isinstance(entry, tuple)
                        and len(entry) == 2
                        and isinstance(entry[0], int)
                        and 0 <= entry[0] < len(results)
                    ):
                        results[entry[0]] = entry[1]
        finally:
            self.close()
        return results

    def __del__(self) -> None:
        self.close()  # dropped without join: a child must not wait forever to send its results

    def close(self) -> None:
        """Stop the children (killed if still working) and drop the queue; idempotent."""
        for child in self._children:
            child.stop()
        self._children.clear()
        if self._queue is not None:
            with contextlib.suppress(OSError):
                os.close(self._queue)
            self._queue = None


def map_shared(function: Callable[[T], Any], items: Sequence[T], *, processes: int | None = None) -> list[Any]:
    """``function(item)`` for each item, in order, shared with forked children when worth it (:class:`SharedMap`)."""
    return SharedMap(function, items, processes=processes).join()


def _attempt(function: Callable[[T], Any], item: T) -> Any:
    try:
        return function(item)
    except Exception:  # the caller does it again in-process, which reports the error
        return None


@dataclass
class _Child:
    """A forked worker taking items from the queue, and the read end of the pipe it answers on."""

    pid: int
    pipe: int
    reaped: bool = False

    @classmethod
    def start(cls, work: Callable[[], Any]) -> _Child:
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if pid == 0:  # the child: compute, send, and leave without running the parent's exit code
            status = 1
            try:
                os.close(read)
                _default_signals()
                data = marshal.dumps(work())
                with os.fdopen(write, "wb") as out:
                    out.write(_SIZE.pack(len(data)))
                    out.write(data)
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        return cls(pid, read)

    def collect(self) -> list[Any] | None:
        """The child's results, or None when it failed."""
        values = None
        with os.fdopen(self.pipe, "rb", closefd=False) as source:
            header = source.read(_SIZE.size)
            if len(header) == _SIZE.size:
                # Received into a private mapping, not the heap: megabytes there, read once and
                # freed, would be a hole the process keeps.
                (size,) = _SIZE.unpack(header)
                with mmap.mmap(-1, max(size, 1)) as buffer, memoryview(buffer) as view:
                    received = 0
                    while received < size and (count := source.readinto(view[received:size])):
                        received += count
                    if received == size:
                        with contextlib.suppress(ValueError, EOFError, TypeError), view[:size] as data:
                            values = marshal.loads(data)
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return None
        return values if isinstance(values, list) else None

    def stop(self) -> None:
        """Kill the child if it is still running, reap it, close the pipe."""
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.reaped = True
        with contextlib.suppress(OSError):
            os.close(self.pipe)


def _default_signals() -> None:
    """In a child: signals kill it rather than run the parent's handlers (asyncio's wake-up pipe is shared)."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_DFL)
