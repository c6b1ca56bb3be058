"""Files the router creates are 0600 and folders 0700, whatever the umask; an existing file or
folder that others can read is warned about at start-up (router/support/private_files.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import embedded_rules, post_events, setup_project


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_serve_creates_private_files_and_warns_about_exposed_ones(tmp_path: Path) -> None:
    async with HttpSink() as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}'}}",
                "  - {name: note, on: '**', template: note, channels: [hook]}",
            ).replace("sqlite:///state.db", "sqlite:///.router/state/state.db"),
        )
        old_umask = os.umask(0o022)  # the usual umask: files 0644 and folders 0755 unless asked otherwise
        try:
            router = await RouterProcess(tmp_path).start()
        finally:
            os.umask(old_umask)
        try:
            await post_events(router, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
            await hook.wait_for(1)
            await router.wait_for_log(lambda r: r.get("outcome") == "sent")
        finally:
            await router.stop()
        folder = tmp_path / ".router"
        created = sorted(p for p in folder.rglob("*"))
        names = {p.relative_to(folder).as_posix() for p in created}
        for expected in ("queue.db", "state/state.db", "state/state.db.lock", "record.key", "cache"):
            assert expected in names, sorted(names)
        assert mode(folder) == 0o700
        for path in created:
            assert mode(path) == (0o700 if path.is_dir() else 0o600), f"{path}: {mode(path):04o}"
        assert not any("accessible to other users" in r.get("msg", "") for r in router.log_records())

        # Made readable by others (an old version, a copy, a chmod): named at the next start.
        os.chmod(folder / "queue.db", 0o644)
        os.chmod(folder, 0o755)
        router = await RouterProcess(tmp_path).start()
        try:
            warned = {r["path"] for r in router.log_records() if "accessible to other users" in r.get("msg", "")}
        finally:
            await router.stop()
        # queue.db and the -wal/-shm files SQLite made beside it with its mode; the folder.
        assert warned == {str(folder), *(str(folder / f"queue.db{suffix}") for suffix in ("", "-wal", "-shm"))}
