"""What a job plugin author relies on: rendering a job rule, channel references in `with:`,
follow-up events that survive a retry, and the job's own state (docs/plugins.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

import router.plugins.manager as plugin_manager
from router import ChannelRef, Job, JobContext, NoOptions, UnknownChannelError
from router.cli import cli
from router.plugins.registry import Registry
from tests.builders import event_bytes, event_object, make_event
from tests.engine_support import Harness, RecorderChannel, start_harness, until
from tests.engine_support import test_registry as recorder_registry

# -- a job plugin, written as docs/plugins.md shows one ---------------------------------------


class EscalateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary: Annotated[str, ChannelRef]
    fallbacks: Annotated[list[str], ChannelRef] = []


class EscalateJob(Job):
    name = "pager.escalate"
    With = EscalateOptions

    async def handle(self, ctx: JobContext) -> None:
        options = ctx.options
        assert isinstance(options, EscalateOptions)
        outcome = await ctx.deliver(options.primary, ctx.render(options.primary))
        if outcome.status == "failed":
            for fallback in options.fallbacks:
                await ctx.deliver(fallback, ctx.render(fallback))


class UnmarkedOptions(BaseModel):
    target: str  # a channel name the job does not mark: only the run-time check sees it


RUNS: list[int] = []


class UnmarkedJob(Job):
    name = "test.unmarked"
    With = UnmarkedOptions

    async def handle(self, ctx: JobContext) -> None:
        RUNS.append(ctx.attempt)
        options = ctx.options
        assert isinstance(options, UnmarkedOptions)
        await ctx.deliver(options.target, ctx.render())


class NoteJob(Job):
    """A job that names no channel: it renders the rule's template without a channel type."""

    name = "test.note"
    With = NoOptions
    notes: list[tuple[str, str]] = []

    async def handle(self, ctx: JobContext) -> None:
        message = ctx.render()
        self.notes.append((message.title, message.body))


PUBLISHED: list[str] = []


class PublishThenFailJob(Job):
    """Publishes a follow-up, then fails its first run: the retry publishes it again."""

    name = "test.publish_then_fail"

    async def handle(self, ctx: JobContext) -> None:
        PUBLISHED.append(await ctx.publish("order.followed_up", {"order": ctx.event.data.get("order")}))
        if ctx.attempt == 1:
            raise RuntimeError("failed after publishing")


class PublishWithIdJob(Job):
    name = "test.publish_with_id"

    async def handle(self, ctx: JobContext) -> None:
        await ctx.publish("order.followed_up", {}, id=f"follow-up-of-{ctx.event.id}")


SEEN: list[bool] = []


class StatefulJob(Job):
    name = "test.stateful"

    async def handle(self, ctx: JobContext) -> None:
        SEEN.append(await ctx.state.first_seen(str(ctx.event.data["key"]), 60))
        await ctx.state.mark("last", 60)
        assert await ctx.state.is_marked("last")
        assert not await ctx.state.is_marked("never")


JOBS: list[type[Job]] = [EscalateJob, UnmarkedJob, NoteJob, PublishThenFailJob, PublishWithIdJob, StatefulJob]


def jobs_registry() -> Registry:
    registry = recorder_registry()
    for job in JOBS:
        registry.jobs[job.name] = job
    return registry


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    RecorderChannel.reset()
    RUNS.clear()
    PUBLISHED.clear()
    SEEN.clear()
    NoteJob.notes.clear()
    yield


@pytest.fixture
def cli_with_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI commands see the test jobs, as they would see an installed plugin's."""
    real = plugin_manager.build_registry

    def build(*args: Any, **kwargs: Any) -> Registry:
        registry = real(*args, **kwargs)
        for job in JOBS:
            registry.jobs.setdefault(job.name, job)
        return registry

    monkeypatch.setattr(plugin_manager, "build_registry", build)


def write(root: Path, rules: str) -> Path:
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "incident.j2").write_text(
        "{% block title %}Incident {{ data.id }}{% endblock %}{% block body %}{{ data.summary }}"
        "{% if channel.name is defined %} (for {{ channel.name }}){% endif %}{% endblock %}"
    )
    (root / "event.json").write_text(json.dumps(event_object("incident.opened", "e1", {"id": 7, "summary": "db down"})))
    config = root / "rules.yaml"
    config.write_text(
        f"version: 1\nchannels:\n  oncall-slack: {{type: console}}\n  oncall-email: {{type: console}}\nrules:\n{rules}"
    )
    return config


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- B1: render a job rule --------------------------------------------------------------------

ESCALATE_RULE = """\
  - name: outage
    on: incident.opened
    template: incident
    job: pager.escalate
    with: {primary: oncall-slack, fallbacks: [oncall-email]}
"""


def test_render_of_a_job_rule_renders_for_the_channels_its_options_name(cli_with_jobs: None, tmp_path: Path) -> None:
    config = write(tmp_path, ESCALATE_RULE)
    code, out, err = run(
        "render", "--rule", "outage", "--event", str(tmp_path / "event.json"), "-c", str(config), "--json"
    )
    assert code == 0, out + err
    assert [(r["channel"], r["title"], r["body"]) for r in json.loads(out)] == [
        ("oncall-slack", "Incident 7", "db down (for oncall-slack)"),
        ("oncall-email", "Incident 7", "db down (for oncall-email)"),
    ]


def test_render_of_a_job_rule_that_names_no_channel_shows_what_the_job_renders(
    cli_with_jobs: None, tmp_path: Path
) -> None:
    config = write(tmp_path, "  - {name: note, on: incident.opened, template: incident, job: test.note}\n")
    code, out, err = run("render", "--rule", "note", "--event", str(tmp_path / "event.json"), "-c", str(config))
    assert code == 0, out + err
    assert "rule 'note' runs job 'test.note' and names no channel" in out
    assert "Title: Incident 7" in out and "db down" in out
    assert "Traceback" not in out + err
    code, out, err = run(
        "render", "--rule", "note", "--event", str(tmp_path / "event.json"), "-c", str(config), "--json"
    )
    assert code == 0, out + err
    assert json.loads(out) == [{"channel": "", "title": "Incident 7", "body": "db down"}]


def test_render_of_a_job_rule_with_a_template_error_exits_2_naming_the_line(
    cli_with_jobs: None, tmp_path: Path
) -> None:
    config = write(tmp_path, "  - {name: note, on: incident.opened, template: incident, job: test.note}\n")
    (tmp_path / "templates" / "incident.j2").write_text("{% block title %}x{% endblock %}\n{{ data.nope }}")
    code, out, err = run("render", "--rule", "note", "--event", str(tmp_path / "event.json"), "-c", str(config))
    assert code == 2, out + err  # as documented for `router render`: the command could not do its work
    assert "incident.j2, line 2" in err and "Traceback" not in out + err


# -- B5: channel references in `with:` --------------------------------------------------------


def test_check_reports_an_unknown_channel_in_a_job_options_with_did_you_mean(
    cli_with_jobs: None, tmp_path: Path
) -> None:
    rules = ESCALATE_RULE.replace(
        "primary: oncall-slack, fallbacks: [oncall-email]",
        "primary: oncall-slak, fallbacks: [oncall-email, no-such-channel]",
    )
    config = write(tmp_path, rules)
    code, out, err = run("check", "-c", str(config))
    assert code == 1, out + err
    text = out + err
    assert "rules[0].with.primary: unknown channel 'oncall-slak'; did you mean 'oncall-slack'?" in text
    assert "rules[0].with.fallbacks[1]: unknown channel 'no-such-channel'" in text


def test_channel_refs_reads_marked_fields_only() -> None:
    from router.config.job_options import channel_ref_fields, channel_refs

    options = EscalateOptions(primary="a", fallbacks=["b", "c"])
    assert channel_ref_fields(EscalateOptions) == ["primary", "fallbacks"]
    assert list(channel_refs(options)) == [(("primary",), "a"), (("fallbacks", 0), "b"), (("fallbacks", 1), "c")]
    assert list(channel_refs(UnmarkedOptions(target="x"))) == []


RULES_HEAD = """
version: 1
defaults:
  retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms, jitter: 0}
channels:
  a: {type: recorder}
rules:
"""
TEMPLATES = {"t.j2": "{% block title %}{{ event.type }}{% endblock %}{% block body %}{{ data }}{% endblock %}"}


@pytest.fixture
async def harnesses(tmp_path: Path) -> AsyncIterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for harness in started:
        await harness.close()


async def start(tmp_path: Path, harnesses: list[Harness], rules: str) -> Harness:
    harness = await start_harness(tmp_path, RULES_HEAD + rules, TEMPLATES, registry=jobs_registry())
    harnesses.append(harness)
    return harness


def body(event_type: str, event_id: str, **data: Any) -> bytes:
    return event_bytes(event_type, event_id, data)


async def test_deliver_to_an_unknown_channel_is_dead_lettered_at_once_naming_it(
    tmp_path: Path, harnesses: list[Harness]
) -> None:
    h = await start(
        tmp_path, harnesses, "  - {name: r, on: x, template: t, job: test.unmarked, with: {target: nope}}\n"
    )
    await h.publish(body("x", "e1"))
    await until(lambda: h.metrics.dead_letters.labels("unknown-channel")._value.get() == 1)
    [letter] = await h.transport.dlq_list()
    assert letter.reason == "unknown-channel"
    assert "unknown channel 'nope'" in letter.error and "rule 'r'" in letter.error
    assert RUNS == [1], "not retried: a retry cannot configure the channel"


def test_unknown_channel_error_names_the_channel_and_what_is_configured() -> None:
    error = UnknownChannelError("r", "nope", ["b", "a"])
    assert str(error) == "rule 'r': unknown channel 'nope' (configured: a, b)"


# -- B3: ctx.render() without channels, ctx.state ---------------------------------------------


async def test_a_job_rule_without_channels_renders_without_a_channel_type(
    tmp_path: Path, harnesses: list[Harness]
) -> None:
    h = await start(tmp_path, harnesses, "  - {name: r, on: x, template: t, job: test.note}\n")
    await h.publish(body("x", "e1", n=1))
    await until(lambda: len(NoteJob.notes) == 1)
    assert NoteJob.notes == [("x", "{'n': 1}")]


async def test_job_state_is_the_jobs_own_and_first_seen_holds_across_events(
    tmp_path: Path, harnesses: list[Harness]
) -> None:
    h = await start(tmp_path, harnesses, "  - {name: r, on: x, job: test.stateful}\n")
    for n, key in enumerate(["k1", "k1", "k2"]):
        await h.publish(body("x", f"e{n}", key=key))
        await until(lambda n=n: len(SEEN) == n + 1)
    assert SEEN == [True, False, True]
    # The job's keys live in their own namespace: the router's ledger keys are not the job's.
    assert not await h.state.is_sent("last")
    assert await h.state.is_sent("jobstate:test.stateful:last")


# -- B4: follow-up ids ------------------------------------------------------------------------


async def test_a_retried_jobs_follow_up_is_delivered_once(tmp_path: Path, harnesses: list[Harness]) -> None:
    rules = (
        "  - {name: start, on: order.placed, job: test.publish_then_fail}\n"
        "  - {name: follow, on: order.followed_up, template: t, channels: [a]}\n"
    )
    h = await start(tmp_path, harnesses, rules)
    await h.publish(body("order.placed", "o1", order=1), routing_key="order.placed")
    await until(lambda: len(PUBLISHED) == 2)  # the first run published and failed; the retry published again
    assert PUBLISHED[0] == PUBLISHED[1], "the retry published under the same id"
    # Both copies were consumed: the second is skipped as already sent, not delivered again.
    await until(lambda: h.metrics.deliveries.labels("a", "skipped")._value.get() == 1, timeout=15)
    assert len(RecorderChannel.sent.get("a", [])) == 1


def test_follow_up_ids_are_stable_and_distinct() -> None:
    from router.engine.engine import follow_up_id

    assert follow_up_id("e1", "r", 1) == follow_up_id("e1", "r", 1)
    ids = {follow_up_id(e, r, n) for e in ("e1", "e2") for r in ("r", "s") for n in (1, 2)}
    assert len(ids) == 8


async def test_an_explicit_publish_id_is_the_follow_ups_id(tmp_path: Path, harnesses: list[Harness]) -> None:
    rules = (
        "  - {name: start, on: order.placed, job: test.publish_with_id}\n"
        "  - {name: follow, on: order.followed_up, template: t, channels: [a]}\n"
    )
    h = await start(tmp_path, harnesses, rules)
    await h.publish(body("order.placed", "o1", order=1), routing_key="order.placed")
    await until(lambda: len(RecorderChannel.sent.get("a", [])) == 1)
    assert RecorderChannel.sent["a"][0].meta["event_id"] == "follow-up-of-o1"


def test_the_docs_job_example_renders_and_checks_as_documented(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/plugins.md's `pager.escalate`, its rule as the docs write it, and `router render` on it."""
    from tests.test_hooks import doc_sections, example_module

    module = example_module("register_jobs", monkeypatch)
    real = plugin_manager.build_registry

    def build(*args: Any, **kwargs: Any) -> Registry:
        registry = real(*args, **kwargs)
        registry.jobs.setdefault("pager.escalate", module.EscalateJob)
        return registry

    monkeypatch.setattr(plugin_manager, "build_registry", build)
    _, section = doc_sections()["register_jobs"]
    rule_yaml = section[section.index("```yaml\nrules:\n") + len("```yaml\nrules:\n") :]
    rule_yaml = rule_yaml[: rule_yaml.index("```")]
    config = write(tmp_path, rule_yaml)
    code, out, err = run("check", "-c", str(config))
    assert code == 0, out + err
    code, out, err = run(
        "render", "--rule", "outage", "--event", str(tmp_path / "event.json"), "-c", str(config), "--json"
    )
    assert code == 0, out + err
    assert [r["channel"] for r in json.loads(out)] == ["oncall-slack", "oncall-email"]
    broken = write(tmp_path, rule_yaml.replace("primary: oncall-slack", "primary: oncall-slak"))
    code, out, err = run("check", "-c", str(broken))
    assert code == 1 and "did you mean 'oncall-slack'?" in out + err


async def test_a_publish_id_that_no_event_may_carry_is_refused_naming_the_rule() -> None:
    from datetime import UTC, datetime

    from router.config.models import Rule
    from router.core.events import MAX_ID_LENGTH
    from router.core.message import Message, Outcome
    from router.jobs.context import RuleJobContext

    published: list[str | None] = []

    async def publish(type: str, data: dict[str, Any], id: str | None) -> str:
        published.append(id)
        return id or "generated"

    def render(channel: str | None, template: str | None) -> Message:
        return Message("t", "b")

    async def deliver(channel: str, message: Message) -> Outcome:
        return Outcome.sent()

    class NoState:
        async def first_seen(self, key: str, window: float) -> bool:
            return True

        async def is_sent(self, key: str) -> bool:
            return False

        async def mark_sent(self, key: str, ttl: float) -> None:
            return None

    from router.jobs.context import ScopedJobState

    ctx = RuleJobContext(
        event=make_event(type="x", id="e", source="s", time=datetime.now(UTC)),
        rule=Rule.model_validate({"name": "r", "on": "x", "job": "j"}),
        options=NoOptions(),
        state=ScopedJobState(NoState(), "j"),
        render=render,
        deliver=deliver,
        publish=publish,
    )
    for bad in ("", "x" * (MAX_ID_LENGTH + 1)):
        with pytest.raises(ValueError, match="rule 'r': a published event's id must be 1 to"):
            await ctx.publish("y", {}, id=bad)
    assert await ctx.publish("y", {}, id="mine") == "mine"
    assert published == ["mine"]
