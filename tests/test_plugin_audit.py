"""plugins/router-audit: installs as a package, registers through the entry point, records events."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import site
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from router import Event, Message, Outcome
from router.config.models import Rule
from tests import builders

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "router-audit"
IN_CI = os.environ.get("CI") == "true"


# --- installed as a package --------------------------------------------------------------


def _parent_site_dirs() -> list[str]:
    """This interpreter's site-packages folders, where router and its dependencies are installed."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    dirs += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def _require_wheel_builder() -> None:
    """--no-build-isolation builds with this environment's setuptools: it must be able to make wheels."""
    import importlib.util

    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return
    message = (
        f"setuptools {setuptools.__version__} cannot build wheels without the 'wheel' package; need setuptools>=70.1"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv where router-audit is pip-installed and router is importable.

    ``--system-site-packages`` alone is not enough when this test runs inside a venv: the new
    venv would see the base interpreter's packages, not the ones where router is installed.
    A .pth file makes the new venv add this interpreter's site folders too (``addsitedir``
    also runs their .pth files, which is how an editable install of router is found).
    """
    _require_wheel_builder()
    root = tmp_path_factory.mktemp("audit-venv")
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    bridge = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in _parent_site_dirs())
    (Path(purelib) / "_router_parent_env.pth").write_text(bridge + "\n")

    # Build from a copy: a build writes build/ and *.egg-info next to the sources.
    source = root / "router-audit"
    shutil.copytree(PLUGIN_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--no-compile",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return python


REPORT_SCRIPT = """
import dataclasses, json, os
from router.plugins.manager import build_registry

os.environ.pop("ROUTER_LOAD_PLUGINS", None)
registry = build_registry()
report = {
    "plugins": [dataclasses.asdict(p) for p in registry.plugins],
    "job_module": registry.jobs["audit.record"].__module__,
    "ref": registry.filters["audit_ref"]("evt-1"),
}
os.environ["ROUTER_LOAD_PLUGINS"] = ""
report["jobs_without_plugins"] = sorted(build_registry().jobs)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def installed_report(plugin_venv: Path) -> dict[str, Any]:
    """What build_registry() sees in the venv with router-audit installed (one interpreter start)."""
    result = subprocess.run(
        [str(plugin_venv), "-c", REPORT_SCRIPT], capture_output=True, text=True, timeout=120, cwd=plugin_venv.parent
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_installed_plugin_registers_its_job_and_filter(installed_report: dict[str, Any]) -> None:
    audit = [p for p in installed_report["plugins"] if p["name"] == "router-audit"]
    assert audit == [
        {
            "name": "router-audit",
            "version": "0.1.0",
            "source": "package",
            "channels": [],
            "jobs": ["audit.record"],
            "filters": ["audit_ref"],
            "hooks": ["register_jobs", "register_template_filters"],
            "error": None,
        }
    ]
    assert installed_report["job_module"] == "router_audit.job"
    assert installed_report["ref"].startswith("AUD-")


def test_router_load_plugins_can_leave_the_installed_plugin_out(installed_report: dict[str, Any]) -> None:
    assert "notify" in installed_report["jobs_without_plugins"]
    assert "audit.record" not in installed_report["jobs_without_plugins"]


AUDIT_RULES = """
version: 1
channels:
  console: {type: console}
rules:
  - name: audit-everything
    on: "**"
    job: audit.record
    with: {url: "sqlite:///audit.db", table: events}
  - name: note
    on: planet.completed
    template: note
    channels: [console]
"""


def test_router_plugins_and_check_see_the_installed_plugin(plugin_venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROUTER_LOAD_PLUGINS"}
    listed = subprocess.run(
        [str(plugin_venv), "-m", "router.cli", "plugins"], capture_output=True, text=True, timeout=120, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert "router-audit 0.1.0 (package)" in listed.stdout
    assert "jobs: audit.record" in listed.stdout

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "note.j2").write_text("{{ data.who }} {{ event.id | audit_ref }}")
    (tmp_path / "rules.yaml").write_text(AUDIT_RULES)
    checked = subprocess.run(
        [str(plugin_venv), "-m", "router.cli", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audit-everything" in checked.stdout

    (tmp_path / "rules.yaml").write_text(AUDIT_RULES.replace("table: events", "table: 'bad name'"))
    broken = subprocess.run(
        [str(plugin_venv), "-m", "router.cli", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert broken.returncode == 1
    assert "rules[0].with.table" in broken.stderr


# --- the job, run in this process from the plugin's sources -----------------------------


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import router_audit

    yield router_audit


def make_event(event_id: str = "evt-1", **data: Any) -> Event:
    return builders.make_event(
        data or {"planet": {"id": 7, "name": "Kepler"}, "user": "ünïcode"},
        id=event_id,
        time=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        subject="planet/7",
    )


class Ctx:
    """The part of a JobContext the audit job uses."""

    def __init__(self, event: Event, rule: str, options: Any) -> None:
        self.event = event
        self.rule = Rule.model_validate({"name": rule, "on": "**", "job": "audit.record"})
        self.options = options
        self.state = None

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        raise AssertionError("the audit job renders nothing")

    async def deliver(self, channel: str, message: Message) -> Outcome:
        raise AssertionError("the audit job delivers nothing")

    async def publish(self, type: str, data: dict[str, Any]) -> str:
        raise AssertionError("the audit job publishes nothing")


def test_options_default_to_a_sqlite_file_and_the_events_table(audit: Any) -> None:
    options = audit.AuditOptions.model_validate({})
    assert (options.backend, options.table) == ("sqlite", "events")


@pytest.mark.parametrize(
    ("table", "ok"),
    [
        ("events", True),
        ("_Audit_2024", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("2024", False),
        ("events; DROP TABLE users", False),
        ('ev"ents', False),
        ("public.events", False),
        ("", False),
    ],
)
def test_table_must_be_a_plain_identifier(audit: Any, table: str, ok: bool) -> None:
    if ok:
        assert audit.AuditOptions.model_validate({"table": table}).table == table
    else:
        with pytest.raises(ValidationError, match="is not a plain identifier"):
            audit.AuditOptions.model_validate({"table": table})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:hunter2@db/audit", "url scheme 'mysql' is not supported"),
        ("hunter2", "url scheme none is not supported"),
        ("sqlite://hunter2/x.db", "a SQLite url is sqlite:///"),
        ("sqlite:///", "a SQLite url is sqlite:///"),
    ],
)
def test_a_bad_url_is_explained_without_echoing_it(audit: Any, url: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        audit.AuditOptions.model_validate({"url": url})
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_unknown_options_are_errors(audit: Any) -> None:
    with pytest.raises(ValidationError, match="tabel"):
        audit.AuditOptions.model_validate({"tabel": "events"})


def test_a_postgres_url_is_accepted_and_described_without_its_password(audit: Any) -> None:
    pytest.importorskip("psycopg")
    options = audit.AuditOptions.model_validate({"url": "postgresql://app:hunter2@db.local:5432/audit?sslmode=require"})
    assert options.backend == "postgresql"
    assert options.describe() == "postgresql://db.local:5432/audit table events"
    assert "hunter2" not in repr(options)


def test_audit_ref_is_short_stable_and_accepts_events_and_mappings(audit: Any) -> None:
    event = make_event("0f8fad5b-d9cb-469f-a165-70867728950e")
    ref = audit.audit_ref(event.id)
    assert ref == audit.audit_ref(event) == audit.audit_ref({"id": event.id})
    assert ref.startswith("AUD-") and len(ref) == 12
    assert ref != audit.audit_ref("another-id")
    assert audit.audit_ref(event, 16).startswith(ref)
    with pytest.raises(ValueError, match="length"):
        audit.audit_ref(event, 2)
    with pytest.raises(ValueError, match="an event or an event id"):
        audit.audit_ref(42)


async def test_sqlite_records_each_event_once_per_rule(audit: Any, tmp_path: Path) -> None:
    db = tmp_path / "nested" / "audit.db"
    options = audit.AuditOptions.model_validate({"url": f"sqlite:///{db}", "table": "trail"})
    event = make_event()
    # The router builds one job instance per configuration and reuses it for every event.
    job = audit.AuditJob()
    try:
        await job.handle(Ctx(event, "audit", options))
        await job.handle(Ctx(event, "audit", options))  # a redelivery
        await job.handle(Ctx(event, "other-rule", options))
        await job.handle(Ctx(make_event("evt-2", n=2), "audit", options))
    finally:
        await job.aclose()

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT event_id, rule, ref, type, source, time, subject, data FROM trail ORDER BY event_id, rule"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("evt-1", "audit"), ("evt-1", "other-rule"), ("evt-2", "audit")]
    event_id, _rule, ref, type_, source, time, subject, data = rows[0]
    assert (ref, type_, source, subject) == (audit.audit_ref(event_id), "planet.completed", "game", "planet/7")
    assert datetime.fromisoformat(time) == event.time
    assert json.loads(data) == event.data


async def test_sqlite_writes_do_not_block_the_event_loop(audit: Any, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    options = audit.AuditOptions.model_validate({"url": f"sqlite:///{db}"})
    job = audit.AuditJob()
    try:
        await job.handle(Ctx(make_event("evt-1"), "audit", options))  # creates the table
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the job's insert must wait
        pending = asyncio.create_task(job.handle(Ctx(make_event("evt-2"), "audit", options)))
        # Were the insert on the loop's thread, nothing else could run until SQLite gave up.
        ticks = 0
        deadline = asyncio.get_running_loop().time() + 5
        while ticks < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20
        assert not pending.done()
        holder.execute("COMMIT")
        holder.close()
        await asyncio.wait_for(pending, timeout=10)
    finally:
        await job.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)


async def test_concurrent_records_all_land(audit: Any, tmp_path: Path) -> None:
    options = audit.AuditOptions.model_validate({"url": f"sqlite:///{tmp_path / 'a.db'}"})
    job = audit.AuditJob()
    try:
        await asyncio.gather(*(job.handle(Ctx(make_event(f"evt-{i}"), "audit", options)) for i in range(50)))
    finally:
        await job.aclose()
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT count(DISTINCT event_id) FROM events").fetchone() == (50,)


@pytest.mark.integration
async def test_postgresql_records_each_event_once_per_rule(audit: Any, postgres_dsn: str) -> None:
    if IN_CI:
        import psycopg
    else:
        psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' to run this test")
    table = f"audit_test_{uuid.uuid4().hex[:12]}"
    options = audit.AuditOptions.model_validate({"url": postgres_dsn, "table": table})
    job = audit.AuditJob()
    event = make_event()
    try:
        await job.handle(Ctx(event, "audit", options))
        await job.handle(Ctx(event, "audit", options))  # a redelivery
        await job.handle(Ctx(event, "other-rule", options))
        await job.aclose()
        # Closed connections reopen on the next event.
        await job.handle(Ctx(make_event("evt-2"), "audit", options))

        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            cursor = await conn.execute(
                f'SELECT event_id, rule, ref, type, source, time, subject, data FROM "{table}" ORDER BY event_id, rule'
            )
            rows = await cursor.fetchall()
        assert [(r[0], r[1]) for r in rows] == [("evt-1", "audit"), ("evt-1", "other-rule"), ("evt-2", "audit")]
        _event_id, _rule, ref, type_, source, time, subject, data = rows[0]
        assert (ref, type_, source, subject) == (audit.audit_ref(event), "planet.completed", "game", "planet/7")
        assert time == event.time
        assert data == event.data  # stored as JSONB
    finally:
        await job.aclose()
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
