"""README's `Publisher` example, run as written against RabbitMQ and the shipped rules.yaml (issue 16, A4).

The router runs the shipped configuration on its own queue and exchange (ROUTER_QUEUE,
ROUTER_EXCHANGE: what README says to do so as not to share a queue with another router);
the example's code runs with only its URL and exchange pointed there. Both events must be
routed and rendered: they print on the console channel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine_support import until
from tests.serve_support import RouterProcess, delete_topology, unique_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def readme_publisher_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    [example] = [block for block in blocks if "from router import Publisher" in block]
    return example


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    chosen = unique_names()
    yield chosen
    await delete_topology(rabbitmq_url, chosen)


async def test_readme_publisher_example_is_routed_and_rendered_by_the_shipped_rules(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str]
) -> None:
    shutil.copy(ROOT / "rules.yaml", tmp_path / "rules.yaml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    env = {
        **os.environ,
        "ROUTER_BROKER_URL": rabbitmq_url,
        "ROUTER_QUEUE": names["queue"],
        "ROUTER_EXCHANGE": names["exchange"],
        "ROUTER_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
    }
    env.pop("ROUTER_CONFIG", None)
    router = await RouterProcess(tmp_path, env=env, args=("--no-watch",)).start()
    try:
        code = readme_publisher_example()
        target = 'Publisher("amqp://guest:guest@localhost/", '
        assert target in code, "README's example no longer connects as this test expects"
        code = code.replace(target, f"Publisher({rabbitmq_url!r}, exchange={names['exchange']!r}, ")
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

        def printed() -> str:
            return router.out_path.read_text(errors="replace") if router.out_path.exists() else ""

        await until(lambda: "Ada completed Kepler-22b" in printed() and "New sign-up: Grace" in printed(), timeout=60)
        assert "difficulty 4/5" in printed()
        assert "signed up on the gold plan" in printed()
        assert not [r for r in router.log_records() if r.get("level") in ("error", "ERROR")], router.logs()
    finally:
        await router.stop()


async def test_serve_queue_and_exchange_options_and_publish_id_subject(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str]
) -> None:
    """`serve --queue/--exchange` override rules.yaml; `publish --exchange --id --subject` reach that router."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "note.j2").write_text(
        "{% block title %}note {{ event.id }} about {{ event.subject }} from {{ event.source }}{% endblock %}"
    )
    decoy = {"exchange": names["exchange"] + "-unused", "queue": names["queue"] + "-unused"}
    (tmp_path / "rules.yaml").write_text(
        f"""
version: 1
broker: {{url: "{rabbitmq_url}", exchange: {decoy["exchange"]}, queue: {decoy["queue"]}}}
state: {{url: "sqlite:///state.db"}}
channels:
  console: {{type: console}}
rules:
  - {{name: note, on: "**", template: note, channels: [console]}}
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "ROUTER_CONFIG"}
    args = ("--no-watch", "--queue", names["queue"], "--exchange", names["exchange"])
    router = await RouterProcess(tmp_path, env=env, args=args).start()
    try:
        publish = [
            *("publish", "user.signed_up", "--data", '{"user": {"id": 43}}'),
            *("--exchange", names["exchange"], "--id", "signup-43", "--subject", "user/43", "--source", "accounts"),
        ]
        done = subprocess.run(
            [sys.executable, "-c", "from router.cli import main; main()", *publish],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        # mandatory publishing: this fails unless the router bound its queue to this exchange
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "signup-43"

        def printed() -> str:
            return router.out_path.read_text(errors="replace") if router.out_path.exists() else ""

        await until(lambda: "note signup-43 about user/43 from accounts" in printed(), timeout=60)
    finally:
        await router.stop()
        await delete_topology(rabbitmq_url, decoy)


def test_publish_refuses_an_empty_or_unprintable_id() -> None:
    from router.ingest.publish_command import PublishError, new_event

    for bad in ("", "  ", "a\nb", "x" * 513):
        with pytest.raises(PublishError, match="--id"):
            new_event("user.signed_up", {}, source="s", id=bad)
    event = new_event("user.signed_up", {}, source="s", id="signup-43", subject="user/43")
    assert (event.id, event.subject) == ("signup-43", "user/43")
