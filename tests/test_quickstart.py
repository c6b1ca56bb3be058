"""The README quick start, run as written: `router serve` on the shipped rules.yaml and
templates, then the README's own `router publish` and `curl` commands in a "second shell".

The commands are read out of README.md, so the documentation and this test cannot drift.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.fakes.http_sink import free_port
from tests.polling import until

BIN = str(Path(sys.executable).parent)
DEFAULT_ADDRESS = ("127.0.0.1", 8080)


def quick_start_commands() -> list[str]:
    """The shell commands of README.md's "Quick start" section (indented blocks), in order."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Quick start' section"
    commands: list[str] = []
    pending = ""
    for line in match.group(1).splitlines():
        if not line.startswith("    "):
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "  # a continued line
            continue
        commands.append(pending)
        pending = ""
    return commands


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def user_env(tmp_path: Path) -> dict[str, str]:
    """A fresh shell's environment: the virtualenv active, nothing of the router's set."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "DISCORD_", "SLACK_", "SMTP_", "EMAIL_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    return env


async def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def wait_for_text(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not printed (exit code {proc.poll()}):\n{text}")
        await asyncio.sleep(0.05)


def test_readme_quick_start_is_what_the_test_runs() -> None:
    commands = quick_start_commands()
    assert commands[0] == "router serve"
    assert commands[1].startswith("router publish planet.completed --data ")
    assert commands[2].startswith("curl ")
    assert commands[3] == "router activity"
    readme = (ROOT / "README.md").read_text()
    assert "ROUTER_HTTP" in readme, "the README says how to move off a taken port 8080"


async def test_readme_quick_start(tmp_path: Path) -> None:
    serve_cmd, publish_cmd, curl_cmd, activity_cmd = quick_start_commands()
    project = tmp_path / "project"
    project.mkdir()
    (project / "rules.yaml").write_bytes((ROOT / "rules.yaml").read_bytes())
    (project / "templates").mkdir()
    for template in (ROOT / "templates").iterdir():
        (project / "templates" / template.name).write_bytes(template.read_bytes())

    env = user_env(tmp_path)
    host, port = DEFAULT_ADDRESS
    if not port_is_free(host, port):
        # Something else has 8080 on this machine: do what the README says for that case.
        port = free_port()
        env["ROUTER_HTTP"] = f"{host}:{port}"
        curl_cmd = curl_cmd.replace("localhost:8080", f"localhost:{port}")

    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        serve = subprocess.Popen(shlex.split(serve_cmd), cwd=project, env=env, stdout=out, stderr=err)
    try:
        await wait_for_text(err_path, "router started", serve)
        async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}/readyz") as response:
            assert response.status == 200

        # The second shell.
        code, out_text, err_text = await run(shlex.split(publish_cmd), project, env)
        assert code == 0, err_text
        event_id = out_text.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", event_id), f"router publish prints the event id, got {out_text!r}"
        data = json.loads(shlex.split(publish_cmd)[-1])
        title = f"{data['user']['name']} completed {data['planet']['name']}"
        printed = await wait_for_text(out_path, title, serve)
        assert (
            f"=== console ===\n{title}\n{data['user']['name']} just completed **{data['planet']['name']}**" in printed
        )

        code, out_text, err_text = await run(shlex.split(curl_cmd), project, env)
        assert code == 0, err_text
        (curl_id,) = json.loads(out_text)["ids"]
        curl_data = json.loads(shlex.split(curl_cmd)[-1])["data"]
        await wait_for_text(out_path, f"New sign-up: {curl_data['user']['name']}", serve)

        # `router activity` shows both events delivered (the activity store is written in batches).
        rows: dict[str, str] = {}

        async def both_listed() -> bool:
            code, out_text, err_text = await run(shlex.split(activity_cmd), project, env)
            assert code == 0, err_text
            rows.clear()
            rows.update({line.split()[2]: line for line in out_text.splitlines()[1:] if line.strip()})
            return all(key in rows and "pending" not in rows[key] for key in (event_id, curl_id))

        await until(both_listed, "router activity lists both events as delivered", timeout=20, interval=0.3)
        assert re.search(r"planet\.completed\s+planet-completed\s+sent \(console=sent\b", rows[event_id])
        assert "user.signed_up" in rows[curl_id] and "console=sent" in rows[curl_id]
        # The default log level (INFO) tells state changes and failures, not a line per event.
        assert "delivery sent" not in err_path.read_text() and "event handled" not in err_path.read_text()

        serve.send_signal(signal.SIGINT)  # Ctrl-C in the first shell
        assert await asyncio.to_thread(serve.wait, 20) == 0
        assert "router stopped" in err_path.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


@pytest.mark.parametrize("command", ["serve", "publish"])
def test_help_lists_every_option(command: str) -> None:
    result = subprocess.run(
        [f"{BIN}/router", command, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    expected = {
        "serve": [
            "--broker",
            "--http",
            "ROUTER_HTTP",
            "--log-format",
            "--log-level",
            "--shutdown-timeout",
            "--no-watch",
            "--config",
        ],
        "publish": ["--data", "--file", "--source", "--http", "ROUTER_HTTP", "--broker", "--config"],
    }[command]
    missing = [option for option in expected if option not in result.stdout]
    assert not missing, result.stdout
