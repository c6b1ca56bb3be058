"""`router test --cases`: batch routing assertions, like unit tests for rules.yaml.

A cases file is a YAML list; each case has a ``name``, an ``event`` (a path to a JSON file,
relative to the cases file, or an inline mapping) and ``expect`` with ``rules`` and,
optionally, ``channels`` (both compared as the exact ordered list that fires). Every fired
rule's template is also rendered for each of its channels; a render error fails the case.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.app.render_check import render_failures
from router.core.errors import RouterError
from router.core.events import Event, event_from_object
from router.runtime.runtime import Runtime


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[str]
    channels: list[str] | None = None


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    event: str | dict[str, Any]
    expect: Expectation = Field(description="What must fire.")


@dataclass
class CaseResult:
    name: str
    passed: bool
    rules: list[str]
    channels: list[str]
    problem: str = ""


def load_cases(path: Path) -> list[Case]:
    """Parse and validate a cases file; raises RouterError naming the case and key at fault."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RouterError(f"cannot read cases file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise RouterError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, list):
        raise RouterError(f"{path}: expected a list of cases")
    cases = []
    for i, item in enumerate(raw):
        try:
            cases.append(Case.model_validate(item))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise RouterError(f"{path}: case [{i}] {where}: {first['msg']}") from None
    return cases


def case_event(case: Case, base: Path) -> Event:
    if isinstance(case.event, dict):
        return event_from_object(case.event)
    file = Path(case.event)
    if not file.is_absolute():
        file = base / file if (base / file).exists() else file
    try:
        raw = file.read_bytes()
        return event_from_object(json.loads(raw), body_for_id=raw)
    except OSError as error:
        raise RouterError(f"case '{case.name}': cannot read event file {file}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise RouterError(f"case '{case.name}': {file}:{error.lineno}:{error.colno}: not valid JSON") from None


def evaluate(runtime: Runtime, case: Case, base: Path) -> CaseResult:
    event = case_event(case, base)
    schema = runtime.loaded.event_schemas.get(event.type)
    refused = schema.check(event.data) if schema is not None else None
    # An event that fails its declared schema is dead-lettered by the router: no rule fires.
    fired = [] if refused else runtime.index.match(event)
    rules = [rule.name for rule in fired]
    channels: list[str] = []
    for rule in fired:
        channels.extend(c for c in rule.channels if c not in channels)
    problems = []
    if rules != case.expect.rules:
        got = f"none: the event fails its schema ({refused})" if refused else str(rules)
        problems.append(f"expected rules {case.expect.rules}, got {got}")
    if case.expect.channels is not None and channels != case.expect.channels:
        problems.append(f"expected channels {case.expect.channels}, got {channels}")
    # A route is only as good as the message at its end: render what each fired rule sends.
    problems.extend(f"template fails to render: {failure}" for failure in render_failures(runtime, fired, event))
    return CaseResult(case.name, not problems, rules, channels, "; ".join(problems))


def run_cases(runtime: Runtime, path: Path, *, echo: Callable[[str], None], as_json: bool = False) -> bool:
    """Run every case in ``path``, print a line per case; True when all pass."""
    cases = load_cases(path)
    base = path.parent
    results = [evaluate(runtime, case, base) for case in cases]
    if as_json:
        echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for result in results:
            mark = "PASS" if result.passed else "FAIL"
            echo(f"{mark} {result.name}" + (f": {result.problem}" if result.problem else ""))
        failed = sum(not r.passed for r in results)
        echo(f"{len(results) - failed} passed, {failed} failed")
    return all(r.passed for r in results)
