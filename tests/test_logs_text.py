"""Text log lines people read (issue 16, A11): emoji as themselves, one line, no repeated problems."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from router.support.logs import JsonFormatter, TextFormatter
from tests.serve_support import RouterProcess


def record(msg: str, fields: dict[str, Any], **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("router.dry_run", logging.INFO, __file__, 1, msg, (), None)
    made.fields = fields
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_dry_run_line_shows_emoji_and_accents_as_characters() -> None:
    fields = {"rule": "planet", "title": "🪐 Planeta Concluído!", "body": "Um usuário concluiu 🎯"}
    line = TextFormatter().format(record("dry run: would deliver", fields))
    assert 'title="🪐 Planeta Concluído!" body="Um usuário concluiu 🎯"' in line
    assert "\\u" not in line
    assert "rule=planet " in line


def test_values_that_could_break_or_disguise_the_line_are_escaped() -> None:
    fields = {"a": "one\ntwo", "b": "x\u202eevil", "c": "lone\ud800", "d": "", "e": 'say"hi'}
    line = TextFormatter().format(record("m", fields))
    assert "\n" not in line and "\u202e" not in line
    assert 'a="one\\ntwo"' in line
    assert 'b="x\\u202eevil"' in line
    assert 'c="lone\\ud800"' in line
    assert 'd=""' in line and 'e="say\\"hi"' in line
    line.encode("utf-8")  # writable to any UTF-8 stream


def test_reload_failure_text_line_does_not_repeat_the_problems_as_json() -> None:
    problems = ["rules.yaml:3:5: rules[0].tempalte: unknown key; did you mean 'template'?"]
    made = record(
        "reload failed, keeping the previous configuration:\n%s",
        {"trigger": "file change", "problems": problems},
        text_hidden=("problems",),
    )
    made.args = ("1 problem in the configuration:\n  " + problems[0],)
    text = TextFormatter().format(made)
    assert text.count("tempalte") == 1
    assert text.endswith('trigger="file change"')
    assert '"problems": [' in JsonFormatter().format(made).replace('"problems":[', '"problems": [')


def test_every_line_of_a_worker_carries_its_number_in_both_formats() -> None:
    import io
    import json

    from router.support.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for fmt in ("text", "json"):
            configure_logging(fmt, "INFO", worker=1)
            stream = io.StringIO()
            root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
            logging.getLogger("router.test").info("hello", extra={"fields": {"a": 1}})
            logging.getLogger("other.library").warning("plain")
            first, second = stream.getvalue().splitlines()
            if fmt == "json":
                assert json.loads(first)["worker"] == 1 and json.loads(second)["worker"] == 1
            else:
                assert first.endswith("hello a=1 worker=1") and second.endswith("plain worker=1")
        configure_logging("text", "INFO")  # one process: no such field
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("router.test").info("hello")
        assert "worker" not in stream.getvalue()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


async def test_a_real_reload_failure_names_the_problem_once_in_the_text_log(tmp_path: Path) -> None:
    # Through `router serve`'s own reload (SIGHUP), not a hand-built record.
    config = tmp_path / "rules.yaml"
    good = (
        "version: 1\nchannels:\n  out: {type: console}\nrules:\n  - {name: r, on: a.b, template: t, channels: [out]}\n"
    )
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("{% block title %}hi{% endblock %}")
    config.write_text(good)
    router = RouterProcess(tmp_path, args=("--log-format", "text", "--no-watch"), log_level="INFO")
    try:
        await router.start()
        config.write_text(good.replace("template: t", "tempalte: t"))
        router.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "trigger=SIGHUP" not in router.logs():
            assert time.monotonic() < deadline, router.logs()
            await asyncio.sleep(0.05)
    finally:
        await router.stop()
    logged = router.logs()
    failure = logged[logged.index("reload failed") : logged.index("trigger=SIGHUP") + len("trigger=SIGHUP")]
    assert "keeping the previous configuration:\n" in failure
    assert failure.count("tempalte") == 1, failure  # the problem, named once
    assert "did you mean 'template'?" in failure
    assert "problems" not in failure and '\\"' not in failure, failure  # no escaped JSON copy
