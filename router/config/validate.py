"""Validation of rules.yaml data: pydantic errors turned into readable, located issues, and
the cross references that need the plugin registry and the templates folder.

Every function here returns *all* the issues it finds rather than stopping at the first,
and no message contains a configured value (values may be secrets): messages name keys,
types and names only.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ValidationError

from router.config.catalog import Catalog
from router.config.channel_options import ChannelConfig
from router.config.event_schemas import EventSchema, compile_events
from router.config.job_options import channel_refs
from router.config.models import RouterConfig, Rule
from router.config.yamlsource import KeyPath, describe_type
from router.core.patterns import pattern_error
from router.core.suggest import did_you_mean
from router.support.linear_regex import regex_problem


@dataclass(frozen=True)
class Issue:
    """One problem at a key path of the document, not yet located in the file."""

    path: KeyPath
    message: str
    at_key: bool = False  # point at the key itself (unknown keys) rather than its value


# ---------------------------------------------------------------------------------------------
# pydantic errors -> issues

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "iterable_type": "a list",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "url_type": "a URL string",
    "url_parsing": "a valid URL",
    "none_required": "null",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "multiple_of": ("multiple_of", "must be a multiple of {}"),
}


def _redact(message: str, value: Any) -> str:
    """Remove the offending value from a validator's own message (validators may echo it)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        message = message.replace(repr(value), describe_type(value))
        text = str(value)
        if isinstance(value, str) and len(text) >= 3:
            message = message.replace(text, "<value>")
    return message


def _message(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_type(value)}"
    if kind in ("literal_error", "enum"):
        return f"expected {ctx.get('expected', 'one of the allowed values')}"
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        return text.format(ctx.get(key))
    if kind == "string_too_short":
        size = ctx.get("min_length", 1)
        return "must not be empty" if size == 1 else f"must have at least {size} characters"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        size = ctx.get("min_length", 1)
        return "must not be empty" if size == 1 else f"must have at least {size} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}"
    if kind in ("value_error", "assertion_error"):
        return _redact(str(ctx.get("error", error["msg"])), value)
    # Anything else: pydantic's own text, which describes the rule broken, not the input.
    return _redact(str(error["msg"]), value)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _children(tp: Any, part: str | int) -> list[Any]:
    """The types found one step down ``tp`` at loc ``part`` (several for unions)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [child for arg in typing.get_args(tp) for child in _children(arg, part)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return [info.annotation]
        return []
    args = typing.get_args(tp)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return [args[0]]
    if origin is dict and len(args) == 2:
        return [args[1]]
    return []


def _model_at(model: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    current: list[Any] = [model]
    for part in loc:
        found = [child for tp in current for child in _children(tp, part)]
        if found:  # a loc part naming a union member or validator is skipped
            current = found
    for tp in current:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def key_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts as users write them (aliases where set)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _unknown_key(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    owner = _model_at(model, loc[:-1])
    key = str(loc[-1])
    if owner is None:
        return "unknown key"
    names = key_names(owner)
    hint = did_you_mean(key, names)
    return f"unknown key{hint}" if hint else f"unknown key (expected one of: {', '.join(names)})"


def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def issues_from_validation_error(
    exc: ValidationError, model: type[BaseModel], data: Any, prefix: KeyPath = ()
) -> list[Issue]:
    """Map each pydantic error of validating ``data`` with ``model`` to an Issue under ``prefix``."""
    issues: list[Issue] = []
    for error in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(error["loc"])
        kind = error["type"]
        path: list[str | int] = list(prefix)
        current = data
        at_key = False
        for index, part in enumerate(loc):
            last = index == len(loc) - 1
            if part == "[key]":
                at_key = True
            elif _has(current, part):
                path.append(part)
                current = current[part]
            elif last and kind in ("extra_forbidden", "missing"):
                path.append(part)
            # else: a union member or validator name in the loc; it is not a key the user wrote
        if kind == "missing":
            issues.append(Issue(tuple(path[:-1]), f"missing required key '{path[-1]}'"))
        elif kind == "extra_forbidden":
            issues.append(Issue(tuple(path), _unknown_key(model, loc), at_key=True))
        elif kind == "unknown_operator":
            ctx = error.get("ctx") or {}
            issues.append(
                Issue(
                    (*path, ctx["path"], ctx["operator"]),
                    f"unknown operator{ctx['hint']} (operators: {ctx['operators']})",
                    at_key=True,
                )
            )
        else:
            issues.append(Issue(tuple(path), _message(error), at_key=at_key))
    return _merge_alternatives(issues)


def _merge_alternatives(issues: list[Issue]) -> list[Issue]:
    """Fold the per-member errors of a union into one ``expected X or Y`` issue per path."""
    out: list[Issue] = []
    expected: dict[KeyPath, int] = {}
    for issue in issues:
        if issue in out:
            continue
        if issue.message.startswith("expected ") and issue.path in expected:
            prior = out[expected[issue.path]]
            head, _, got = prior.message.partition(", got ")
            more = issue.message.removeprefix("expected ").partition(", got ")[0]
            message = f"{head} or {more}" + (f", got {got}" if got else "")
            out[expected[issue.path]] = Issue(prior.path, message, prior.at_key)
            continue
        if issue.message.startswith("expected "):
            expected[issue.path] = len(out)
        out.append(issue)
    return out


def validate_structure(data: Any) -> tuple[RouterConfig | None, list[Issue]]:
    """Validate the whole document against :class:`RouterConfig`."""
    try:
        return RouterConfig.model_validate(data), []
    except ValidationError as exc:
        return None, issues_from_validation_error(exc, RouterConfig, data)


# ---------------------------------------------------------------------------------------------
# event type patterns and conditions

_DEFAULT_JOB = Rule.model_fields["job"].default


def _condition_issues(rule_path: KeyPath, raw_when: Any) -> list[Issue]:
    """Check condition keys and operands as written (bare values mean ``eq``)."""
    if not isinstance(raw_when, dict):
        return []
    issues: list[Issue] = []
    for key, condition in raw_when.items():
        base = (*rule_path, "when", key)
        if any(not part for part in key.split(".")):
            issues.append(Issue(base, "a condition key is a dotted path like 'data.user.id'", at_key=True))
        if not isinstance(condition, dict) or not condition:
            continue  # a bare value: eq, any operand is fine
        for op, operand in condition.items():
            where = (*base, op)
            if op == "regex":
                if not isinstance(operand, str):
                    issues.append(Issue(where, f"expected a regular expression string, got {describe_type(operand)}"))
                    continue
                problem = regex_problem(operand)
                if problem is not None:
                    issues.append(Issue(where, problem))
            elif op in ("in", "not_in") and not isinstance(operand, list):
                issues.append(Issue(where, f"'{op}' expects a list, got {describe_type(operand)}"))
            elif op == "exists" and not isinstance(operand, bool):
                issues.append(Issue(where, f"'exists' expects true or false, got {describe_type(operand)}"))
    return issues


def _strings(value: Any) -> list[tuple[int, str]]:
    """The (index, item) string items of a list as written; other items are the model's to report."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, str)]


# ---------------------------------------------------------------------------------------------
# cross references


@dataclass
class References:
    """What :func:`validate_references` produced: plugin configs, job options and issues."""

    channel_configs: dict[str, ChannelConfig] = field(default_factory=dict)
    job_options: dict[int, BaseModel] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    event_schemas: dict[str, EventSchema] = field(default_factory=dict)  # the `events:` section, compiled


def _template_names(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.j2") if p.is_file()}


def _template_stem(name: str) -> str:
    stem = name.removesuffix(".j2")
    head, _, tail = stem.rpartition("/")
    if "." in tail:  # NAME.TYPE.j2 -> NAME
        tail = tail.rsplit(".", 1)[0]
    return f"{head}/{tail}" if head else tail


class _ReferenceChecker:
    def __init__(
        self, data: Mapping[str, Any], registry: Catalog, templates_dir: Path, *, rules_valid: bool = False
    ) -> None:
        self.data = data
        self.rules_valid = rules_valid
        self.registry = registry
        self.templates_dir = templates_dir
        self.templates_label = str(data.get("templates", "templates")).rstrip("/")
        self.result = References()
        raw_channels = data.get("channels")
        self.channels: Mapping[str, Any] = raw_channels if isinstance(raw_channels, dict) else {}
        self.channel_types: dict[str, str] = {}
        self._templates: set[str] | None = None
        self._templates_dir_exists: bool | None = None
        self._jinja = jinja2.Environment()

    def add(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        self.result.issues.append(Issue(path, message, at_key))

    def run(self) -> References:
        for name, spec in self.channels.items():
            self.check_channel(name, spec)
        rules = self.data.get("rules")
        if isinstance(rules, list):
            self.check_rules(rules)
        check_on_failure(self)
        check_events(self)
        return self.result

    # channels ---------------------------------------------------------------------------

    def check_channel(self, name: str, spec: Any) -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            return  # reported by the structural validation
        type_name: str = spec["type"]
        self.channel_types[name] = type_name
        cls = self.registry.channels.get(type_name)
        path: KeyPath = ("channels", name)
        if cls is None:
            self.add((*path, "type"), self._unknown("channel type", type_name, self.registry.channels))
            return
        try:
            self.result.channel_configs[name] = cls.Config.model_validate(spec)
        except ValidationError as exc:
            self.result.issues.extend(issues_from_validation_error(exc, cls.Config, spec, path))

    @staticmethod
    def _unknown(what: str, name: str, known: Iterable[str]) -> str:
        names = sorted(known)
        hint = did_you_mean(name, names)
        if hint:
            return f"unknown {what} '{name}'{hint}"
        listing = ", ".join(names) if names else "none"
        return f"unknown {what} '{name}' (known: {listing})"

    # rules ------------------------------------------------------------------------------

    def check_rules(self, rules: list[Any]) -> None:
        # Checks read the raw rule, so a rule with a typo in one key still has its other
        # references checked; each check skips values of the wrong type (reported already).
        first_use: dict[str, int] = {}
        for index, raw in enumerate(rules):
            if not isinstance(raw, dict):
                continue
            path: KeyPath = ("rules", index)
            name = raw.get("name")
            if isinstance(name, str):
                if name in first_use:
                    self.add((*path, "name"), f"duplicate rule name '{name}' (also used by rules[{first_use[name]}])")
                else:
                    first_use[name] = index
            valid = self.rules_valid or _valid_rule(raw)
            self.check_job(path, raw, index, valid)
            self.check_rule_channels(path, raw)
            self.check_template(path, raw)
            self.check_patterns(path, raw)
            self.result.issues.extend(_condition_issues(path, raw.get("when")))
            self.check_key_templates(path, raw)

    def check_job(self, path: KeyPath, raw: Mapping[str, Any], index: int, valid: bool) -> None:
        job_name = raw.get("job", _DEFAULT_JOB)
        if not isinstance(job_name, str):
            return
        job = self.registry.jobs.get(job_name)
        if job is None:
            if "job" in raw:
                self.add((*path, "job"), self._unknown("job", job_name, self.registry.jobs))
            else:
                self.add(path, f"the default job '{job_name}' is not registered (is the router installed fully?)")
            return
        options = raw.get("with", raw.get("with_", {}))
        options = {} if options is None else options
        if isinstance(options, dict):
            try:
                validated = job.With.model_validate(options)
            except ValidationError as exc:
                self.result.issues.extend(issues_from_validation_error(exc, job.With, options, (*path, "with")))
            else:
                self.result.job_options[index] = validated
                # Fields the job marks with ChannelRef name channels: checked like `channels:`.
                for where, channel in channel_refs(validated):
                    if channel not in self.channels:
                        self.add((*path, "with", *where), self._unknown("channel", channel, self.channels))
        # Only for an otherwise valid rule: a misspelt `template` key is already reported.
        if valid and job_name == _DEFAULT_JOB and not raw.get("template"):
            self.add(path, "missing required key 'template' (the notify job renders it)")

    def check_rule_channels(self, path: KeyPath, raw: Mapping[str, Any]) -> None:
        for position, name in _strings(raw.get("channels")):
            if name not in self.channels:
                self.add((*path, "channels", position), self._unknown("channel", name, self.channels))

    def templates(self) -> set[str]:
        if self._templates is None:
            self._templates = _template_names(self.templates_dir)
        return self._templates

    def check_template(self, path: KeyPath, raw: Mapping[str, Any]) -> None:
        name = raw.get("template")
        if not isinstance(name, str) or not name:
            return
        where = (*path, "template")
        if name.startswith("/") or "\\" in name or ".." in name.split("/"):
            self.add(where, "a template name is relative to the templates folder and may not contain '..'")
            return
        if self._templates_dir_exists is None:  # once, not once per rule
            self._templates_dir_exists = self.templates_dir.is_dir()
        if not self._templates_dir_exists:
            self.add(
                where,
                f"template '{name}' not found: the templates folder '{self.templates_label}' does not exist"
                f" ({self.templates_dir}; a relative folder is relative to rules.yaml)",
            )
            return
        available = self.templates()
        if f"{name}.j2" in available:
            return
        channels = [c for _, c in _strings(raw.get("channels"))]
        types_used = sorted({self.channel_types[c] for c in channels if c in self.channel_types})
        missing = [f"{name}.{t}.j2" for t in types_used if f"{name}.{t}.j2" not in available]
        if types_used and not missing:
            return
        message = f"template '{name}' not found in {self.templates_label}/: expected {name}.j2"
        if types_used:
            message += f", or {name}.<type>.j2 for every channel type of the rule (missing: {', '.join(missing)})"
        message += did_you_mean(name, {_template_stem(t) for t in available} - {name})
        self.add(where, message)

    def check_patterns(self, path: KeyPath, raw: Mapping[str, Any]) -> None:
        written = raw.get("on")
        located: list[tuple[KeyPath, str]]
        if isinstance(written, str):
            located = [((*path, "on"), written)]
        else:
            located = [((*path, "on", i), p) for i, p in _strings(written)]
            if isinstance(written, list) and not written:
                self.add((*path, "on"), "needs at least one event type pattern")
        for where, pattern in located:
            problem = pattern_error(pattern)
            if problem:
                self.add(where, problem)

    def check_key_templates(self, path: KeyPath, raw: Mapping[str, Any]) -> None:
        for section in ("dedupe", "throttle", "rate_limit", "digest"):
            spec = raw.get(section)
            key = spec.get("key") if isinstance(spec, dict) else None
            if not isinstance(key, str):
                continue
            try:
                self._jinja.parse(key)
            except jinja2.TemplateSyntaxError as exc:
                self.add((*path, section, "key"), f"invalid template expression: {exc.message}")


def _valid_rule(raw: Mapping[str, Any]) -> bool:
    try:
        Rule.model_validate(raw)
    except ValidationError:
        return False
    return True


def check_on_failure(checker: _ReferenceChecker) -> None:
    """``on_failure`` (under ``defaults:`` and in each rule): its channels exist and its template is found
    for every channel type it is sent to. ``on_failure: false`` and missing keys are left to the models."""
    located: list[tuple[KeyPath, Any]] = []
    defaults = checker.data.get("defaults")
    if isinstance(defaults, dict):
        located.append((("defaults", "on_failure"), defaults.get("on_failure")))
    rules = checker.data.get("rules")
    for index, raw in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(raw, dict):
            located.append((("rules", index, "on_failure"), raw.get("on_failure")))
    for path, spec in located:
        if isinstance(spec, dict):
            # The same shape as a rule's template and channels, so the same checks and messages.
            checker.check_rule_channels(path, spec)
            checker.check_template(path, spec)


def check_events(checker: _ReferenceChecker) -> None:
    """The ``events:`` section: each key an exact event type, each entry a schema that compiles."""
    section = checker.data.get("events")
    if not isinstance(section, dict):
        return  # absent, or not a mapping (reported by the models)
    for event_type in section:
        if not isinstance(event_type, str):
            continue
        if any(segment in ("*", "**") for segment in re.split(r"[./]", event_type)):
            checker.add(
                ("events", event_type),
                "a schema is declared for one exact event type; patterns ('*', '**') are not allowed here",
                at_key=True,
            )
        elif problem := pattern_error(event_type):
            checker.add(("events", event_type), f"not a valid event type: {problem}", at_key=True)
    schemas, problems = compile_events(section)
    for found in problems:
        checker.add(("events", *found.path), found.message, at_key=found.at_key)
    checker.result.event_schemas = schemas


def validate_references(
    data: Mapping[str, Any], registry: Catalog, templates_dir: Path, *, rules_valid: bool = False
) -> References:
    """Check what needs the registry and the templates folder, on the document's raw data.

    Works on raw data rather than a validated RouterConfig so that references are checked
    even when another part of the file is structurally invalid: every rule and channel
    that validates on its own is checked. ``rules_valid`` says the whole document validated
    already, so no rule is validated a second time to know whether it is valid.
    """
    return _ReferenceChecker(data, registry, templates_dir, rules_valid=rules_valid).run()
