"""The activity writer process (router/activity/writer.py): its lifecycle and its failures.

``router serve`` writes its history through a child process; what users rely on: history is
written, a writer that dies costs one batch (counted) and is started again, an unreachable store
is named without its password, signals meant for the group do not end it early, and a router
killed outright leaves no writer behind.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from router.activity.query import open_store
from router.activity.recorder import Recorder, build_batch
from router.activity.store import Filter
from router.activity.writer import WRITER_NICE, WriterError, WriterProcess
from router.core.delivery import Delivery
from router.core.message import Message, Outcome
from router.support.metrics import Metrics
from tests.builders import make_event
from tests.polling import until_sync


def story(event_id: str) -> list[tuple[object, ...]]:
    """The buffered calls of one event that fired rule 'paid' and was sent to 'hook'."""
    event = make_event({"n": 1}, type="order.paid", id=event_id)
    delivery = Delivery(event, "paid", "hook", "webhook", Message("paid", "body"), 1)
    now = time.time()
    return [
        ("e", now, event, 10, "none", "embedded", "test:1"),
        ("v", now, event_id, "paid", "fired", ""),
        ("a", now, delivery, Outcome.sent(), "sent", 0.01, None, None),
    ]


def listed(url: str) -> set[str]:
    reader = open_store(url)
    try:
        return {e["event_id"] for e in reader.list_events(Filter(limit=500))["events"]}
    finally:
        reader.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it has exited, it only waits for its parent to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'activity.db'}"


def test_batches_written_through_the_child_are_read_back(url: str) -> None:
    writer = WriterProcess(url, None, "sqlite test")
    writer.open()
    try:
        assert writer.pid is not None and writer.pid != os.getpid()
        writer.write(build_batch(story("a") + story("b")))
        assert listed(url) == {"a", "b"}
        assert writer.prune(time.time() + 3600, 60.0, 1 << 30) == 2
        assert listed(url) == set()
    finally:
        writer.close()
    assert writer.pid is None


def pending_bytes(writer: WriterProcess) -> int:
    """Bytes written to the child that it has not read yet (FIONREAD works on either end of a pipe)."""
    child = writer._child
    assert child is not None and child.stdin is not None
    return struct.unpack("i", fcntl.ioctl(child.stdin.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def kill_once_a_request_waits(writer: WriterProcess) -> None:
    """Stop the child, wait until a request is in its pipe, then kill it: it dies mid-call."""
    pid = writer.pid
    assert pid is not None
    until_sync(lambda: pending_bytes(writer) > 0, timeout=10, what="a request to reach the stopped writer")
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def writer(url: str) -> Iterator[WriterProcess]:
    """A writer whose child runs (opened), closed after the test."""
    opened = WriterProcess(url, None, "sqlite test")
    opened.open()
    assert opened.pid is not None
    yield opened
    opened.close()


def test_the_writer_yields_the_cpu_to_deliveries(writer: WriterProcess) -> None:
    with open(f"/proc/{writer.pid}/stat") as stat:
        nice = int(stat.read().rsplit(")", 1)[1].split()[16])
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICE)


def test_a_writer_that_died_between_batches_is_started_again_losing_nothing(writer: WriterProcess, url: str) -> None:
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until_sync(lambda: not alive(first), timeout=10, what="the writer to die")
    writer.write(build_batch(story("kept")))
    assert writer.pid not in (None, first)
    assert listed(url) == {"kept"}


def test_a_writer_that_dies_mid_batch_costs_that_batch_and_is_started_again(writer: WriterProcess, url: str) -> None:
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(writer.write, build_batch(story("lost")))
        kill_once_a_request_waits(writer)
        with pytest.raises(WriterError, match="exited"):
            call.result(timeout=10)
    writer.write(build_batch(story("kept")))
    assert writer.pid not in (None, first)
    assert listed(url) == {"kept"}


def test_signals_to_the_group_do_not_end_the_writer_early(writer: WriterProcess, url: str) -> None:
    pid = writer.pid
    assert pid is not None
    # Ctrl-C and a service manager's stop signal the whole group: the router decides when
    # history stops (after its last batch), not the signal.
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    writer.write(build_batch(story("after-signals")))
    assert writer.pid == pid
    assert listed(url) == {"after-signals"}


def test_an_unreachable_store_is_named_by_type_without_its_password() -> None:
    secret = "s3cret-pw-8841"
    url = f"postgresql://router:{secret}@127.0.0.1:9/history"  # port 9: nothing listens
    writer = WriterProcess(url, None, "postgresql 127.0.0.1:9")
    try:
        with pytest.raises(WriterError) as caught:
            writer.open()
        assert caught.value.kind in {"OperationalError", "RuntimeError"}
        assert secret not in str(caught.value)
        # The child stays up: the store may come back, and the next write tries it again.
        assert writer.pid is not None
    finally:
        writer.close()


async def test_the_recorder_counts_a_batch_the_dying_writer_lost(url: str) -> None:
    metrics = Metrics()
    writer = WriterProcess(url, None, "sqlite test")
    recorder = Recorder(writer, metrics=metrics, transport="embedded", interval=60)
    await recorder.start()
    try:
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        for item in story("lost"):
            recorder._put(item)
        flushing = asyncio.create_task(recorder.flush())
        await asyncio.to_thread(kill_once_a_request_waits, writer)
        await flushing
        assert metrics.activity_dropped.get() == 3
        for item in story("kept"):
            recorder._put(item)
        await recorder.flush()
        assert listed(url) == {"kept"}
    finally:
        await recorder.close()


def test_a_router_killed_outright_leaves_no_writer_behind(tmp_path: Path, url: str) -> None:
    script = (
        "import sys, time\n"
        "from router.activity.writer import WriterProcess\n"
        f"w = WriterProcess({url!r}, None, 'sqlite test')\n"
        "w.open()\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait()
        until_sync(lambda: not alive(child), timeout=10, what="the orphaned writer to exit")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_writer_that_cannot_start_says_why_by_type_only(capfd: pytest.CaptureFixture[str]) -> None:
    secret = "pw-77120"
    writer = WriterProcess(f"mysql://router:{secret}@127.0.0.1/history", None, "mysql (unsupported)")
    try:
        with pytest.raises(WriterError, match="exited"):
            writer.open()
    finally:
        writer.close()
    printed = capfd.readouterr()
    assert "activity writer stopped: FilterError" in printed.err
    assert secret not in printed.err + printed.out
