"""The activity writer process: the store's writes run in a child process, not in a thread.

Why a process: a writer thread shares the interpreter lock with the event loop. Binding rows,
stepping statements and summarising held it for a share of every event's time, and each lock
hand-off between the two threads cost more than the work itself: with the history on, intake
ran at 0.77-0.79x of the same run with it off (bench/README section 9). The parent now only
builds rows (``recorder.build_batch``) and pickles each batch onto a pipe; the child owns the
store's connection, writes, prunes and answers.

The protocol is request and reply, one at a time, over the child's stdin and stdout: each frame
is an 8-byte big-endian length and a pickle (both ends are this module, in one install). A reply
is ``("ok", result)`` or ``("error", type name)``: never the error's text, which for a database
driver may carry the URL and its password.

The child runs at a lower priority (``WRITER_NICE``): when the CPU is short, delivering comes
before recording. Measured on two cores with the broker on the same machine: intake with the
history on went from 0.78-0.85x of the run with it off at nice 0 to 0.86-0.96x at nice 10
(bench/README section 9). A writer that falls behind only lets the recorder's bounded buffer
fill; beyond it history is dropped and counted, never a delivery delayed.

The child ignores SIGINT and SIGTERM (a Ctrl-C or a service manager signals the whole group; the
parent decides when history stops, so the last batch is still written) and exits when its stdin
closes: a parent killed with SIGKILL leaves no writer behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from router.activity.store import Batch

HEADER = struct.Struct("!Q")
CLOSE_TIMEOUT = 10.0  # seconds for the child to exit after "close" before it is killed
WRITER_NICE = 10  # added to the child's nice value: see the module docstring


class WriterError(Exception):
    """The child could not do what was asked; ``kind`` is the type name of the error it met."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"activity writer: {kind}")
        self.kind = kind


class WriterProcess:
    """A store's writes (open, write, prune, close) done by a child process.

    Has the methods the recorder calls on a store, so the recorder runs the same with either.
    Each call blocks its caller (the recorder's own thread) until the child answers; the
    interpreter lock is released meanwhile. A child that dies during a call makes that call
    raise (its batch counts as dropped); one found dead before a call is replaced first, and
    nothing is lost.
    """

    def __init__(self, url: str, rules_dir: Path | None, description: str) -> None:
        self.url = url
        self.rules_dir = rules_dir
        self.description = description
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.description

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def open(self) -> None:
        """Start the child and open the store there."""
        self._call(("open",))

    def write(self, batch: Batch) -> None:
        self._call(("write", batch))

    def prune(self, now: float, retention: float, max_bytes: int) -> int:
        return int(self._call(("prune", now, retention, max_bytes)))

    def close(self) -> None:
        """Ask the child to close the store and exit; kill it if it does not within CLOSE_TIMEOUT."""
        with self._lock:
            child, self._child = self._child, None
            if child is None:
                return
            try:
                _send(_stdin(child), ("close",))
                _stdin(child).close()
            except OSError:
                pass
            try:
                child.wait(timeout=CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            finally:
                _stdout(child).close()

    def _call(self, request: tuple[Any, ...]) -> Any:
        with self._lock:
            child = self._running()
            try:
                _send(_stdin(child), request)
                reply = _receive(_stdout(child))
            except (OSError, EOFError, pickle.UnpicklingError) as error:
                self._discard(child)
                raise WriterError("the writer process exited") from error
            if reply[0] == "error":
                raise WriterError(str(reply[1]))
            return reply[1]

    def _running(self) -> subprocess.Popen[bytes]:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if child is not None:
            self._discard(child)
        child = subprocess.Popen(
            # -P: the working directory is not put first on the import path; the router this
            # process runs is (a checkout on PYTHONPATH, say), so the child runs the same code.
            [sys.executable, "-P", "-m", "router.activity.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _import_path()},
            close_fds=True,
        )
        try:
            _send(_stdin(child), ("start", self.url, None if self.rules_dir is None else str(self.rules_dir)))
        except OSError as error:
            self._discard(child)
            raise WriterError("the writer process did not start") from error
        self._child = child
        return child

    def _discard(self, child: subprocess.Popen[bytes]) -> None:
        if self._child is child:
            self._child = None
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _import_path() -> str:
    """PYTHONPATH for the child: the folder this router package was imported from, then the parent's."""
    package_root = str(Path(__file__).resolve().parents[2])
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (package_root, inherited) if p)


def _stdin(child: subprocess.Popen[bytes]) -> IO[bytes]:
    assert child.stdin is not None  # always a pipe: see WriterProcess._running
    return child.stdin


def _stdout(child: subprocess.Popen[bytes]) -> IO[bytes]:
    assert child.stdout is not None
    return child.stdout


def _send(stream: IO[bytes], message: tuple[Any, ...]) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = _read_exactly(stream, HEADER.size)
    (length,) = HEADER.unpack(header)
    return pickle.loads(_read_exactly(stream, length))


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) < size:
        raise EOFError("the other end closed the pipe")
    return data


# --------------------------------------------------------------------------- the child


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: open the store named by the first frame, then answer frames until "close" or EOF."""
    from router.activity.query import open_store

    first = _receive(requests)
    _, url, rules_dir = first
    store = open_store(url, None if rules_dir is None else Path(rules_dir))
    try:
        while True:
            try:
                request = _receive(requests)
            except EOFError:
                return  # the parent is gone
            kind = request[0]
            if kind == "close":
                return
            try:
                if kind == "open":
                    store.open()
                    result: Any = None
                elif kind == "write":
                    store.write(request[1])
                    result = None
                elif kind == "prune":
                    result = store.prune(request[1], request[2], request[3])
                else:
                    raise ValueError(f"unknown request {kind!r}")
                reply: tuple[Any, ...] = ("ok", result)
            except Exception as error:
                reply = ("error", type(error).__name__)
            _send(replies, reply)
    finally:
        with contextlib.suppress(Exception):
            store.close()


def main() -> None:
    """Entry of ``python -m router.activity.writer``: serve the parent on stdin and stdout."""
    os.nice(WRITER_NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The frames own stdout: anything else printed (a warning, a library's notice) goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        serve(sys.stdin.buffer, replies)
    except (BrokenPipeError, EOFError):
        pass  # the parent went away mid-reply
    except Exception as error:
        # The type only, never a traceback: a driver's message may carry the URL and its password.
        print(f"activity writer stopped: {type(error).__name__}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
