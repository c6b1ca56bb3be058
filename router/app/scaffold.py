"""`router init [DIR]`: a starting configuration that passes `router check` and `router test --cases`.

Writes a rules.yaml (embedded queue, SQLite state, one console channel, one rule), the rule's
template, an example event and a cases file. Never overwrites: when any of the files exists,
nothing is written and the existing ones are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RULES_YAML = """\
# Written by `router init`. Next steps:
#   router check                                   validate this file and compile the templates
#   router test events/user_signed_up.json         which rules and channels an event reaches
#   router test --cases cases.yaml                 routing assertions, like unit tests
#   router render --rule welcome --event events/user_signed_up.json
#   router serve                                   run it (embedded queue; POST /events on :8080)
#   router publish user.signed_up --file events/user_signed_up.json
# The full reference is docs/configuration.md; `router schema` prints the JSON Schema of this file.
version: 1

broker:
  url: "${ROUTER_BROKER_URL:-}"            # amqp://guest:guest@127.0.0.1:5672/ for RabbitMQ; empty = embedded queue
  # Every router consuming the same queue shares its events (each goes to one of them): give
  # each independent router its own queue.
  exchange: "${ROUTER_EXCHANGE:-events}"
  queue: "${ROUTER_QUEUE:-router}"
state:
  url: "${ROUTER_STATE_URL:-sqlite:///.router/state.db}"
templates: templates

channels:
  console:
    type: console          # prints each message; add discord, slack, email or webhook channels here

rules:
  - name: welcome
    on: user.signed_up
    template: user_signed_up
    channels: [console]
"""

TEMPLATE = """\
{% block title %}New sign-up: {{ data.user.name }}{% endblock %}
{% block body %}
{{ data.user.name }} signed up on the {{ data.user.plan | default("free") }} plan.
{% endblock %}
"""

EVENT = """\
{
  "type": "user.signed_up",
  "source": "app.accounts",
  "data": {"user": {"id": 1, "name": "Ada", "plan": "gold"}}
}
"""

CASES = """\
# `router test --cases cases.yaml`: the rules (and channels) each event must reach.
- name: a sign-up is welcomed on the console
  event: events/user_signed_up.json
  expect:
    rules: [welcome]
    channels: [console]
- name: other events reach no rule
  event: {type: user.deleted, data: {user: {id: 1}}}
  expect:
    rules: []
"""

FILES: dict[str, str] = {
    "rules.yaml": RULES_YAML,
    "templates/user_signed_up.j2": TEMPLATE,
    "events/user_signed_up.json": EVENT,
    "cases.yaml": CASES,
}
"""Relative path -> content of every file `router init` writes."""


@dataclass(frozen=True)
class InitResult:
    """What `router init` did: the files written, or the existing files that stopped it."""

    written: list[Path]
    existing: list[Path]


def init_project(directory: Path) -> InitResult:
    """Write :data:`FILES` under ``directory`` (created if needed), unless any of them exists."""
    targets = {directory / relative: content for relative, content in FILES.items()}
    existing = [path for path in targets if path.exists() or path.is_symlink()]
    if existing:
        return InitResult([], existing)
    written = []
    for path, content in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as file:  # "x": never replace a file created meanwhile
            file.write(content)
        written.append(path)
    return InitResult(written, [])
