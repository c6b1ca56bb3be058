"""Load rules.yaml: parse with positions, substitute the environment, validate, cross-check.

Every stage collects its problems instead of stopping at the first, so one run of
``router check`` shows everything that is wrong, each with file:line:column and key path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from router.config.catalog import Catalog
from router.config.channel_options import ChannelConfig
from router.config.envsubst import substitute_tree
from router.config.event_schemas import EventSchema
from router.config.models import RouterConfig
from router.config.validate import Issue, validate_references, validate_structure
from router.config.yamlsource import KeyPath, YamlDocument, describe_type, parse_yaml
from router.core.errors import ConfigError, Problem
from router.support.disk_cache import cache_root

_REDACTED = "<redacted>"
_MIN_SECRET = 3  # shorter values are not secrets, and scrubbing them would garble messages


@dataclass
class LoadedConfig:
    """A validated rules.yaml and what was resolved from it."""

    config: RouterConfig
    path: Path  # absolute path of rules.yaml, or Path("<string>") for text
    templates_dir: Path  # absolute
    channel_configs: dict[str, ChannelConfig]  # channel name -> validated plugin config
    job_options: list[BaseModel]  # index = rule index; the rule's validated `with:`
    event_schemas: dict[str, EventSchema] = field(default_factory=dict)  # event type -> compiled `events:` entry


def default_config_path() -> Path:
    """``$ROUTER_CONFIG`` when set, else ``rules.yaml`` in the working directory."""
    configured = os.environ.get("ROUTER_CONFIG")
    return Path(configured).expanduser() if configured else Path("rules.yaml")


def load_config(path: str | Path, registry: Catalog, *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and validate the rules file at ``path``; raises ConfigError listing every problem."""
    shown = str(path)
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem("file does not exist", file=shown)]) from None
    except IsADirectoryError:
        raise ConfigError([Problem("is a directory, not a file", file=shown)]) from None
    except OSError as exc:
        raise ConfigError(
            [Problem(f"cannot read the file: {exc.strerror or type(exc).__name__}", file=shown)]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(f"not UTF-8 text (invalid byte at offset {exc.start})", file=shown)]) from None
    # abspath normalises `..` without following symlinks: templates sit next to the link.
    absolute = Path(os.path.abspath(file))
    return _load(text, registry, shown, absolute, absolute.parent, env, cached=True)


def load_config_text(
    text: str,
    registry: Catalog,
    *,
    filename: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load rules from ``text``; the templates folder is resolved against ``base_dir`` (default: cwd)."""
    base = Path(os.path.abspath(base_dir or Path.cwd()))
    path = Path(filename) if filename.startswith("<") else Path(os.path.abspath(base / filename))
    return _load(text, registry, filename, path, base, env)


def _load(
    text: str,
    registry: Catalog,
    shown: str,
    path: Path,
    base_dir: Path,
    env: Mapping[str, str] | None,
    *,
    cached: bool = False,
) -> LoadedConfig:
    root = cache_root(path) if cached else None  # text given in memory has no file to cache beside
    cache = root / "config" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.marshal" if root else None
    doc = parse_yaml(text, shown, cache=cache)  # raises for text that is not YAML at all
    if doc.data is None and not doc.problems:
        raise ConfigError([Problem("the file is empty; expected a mapping with at least 'rules'", file=shown)])
    if not isinstance(doc.data, dict):
        raise ConfigError(
            [
                *doc.problems,
                doc.problem(
                    (),
                    f"expected a mapping at the top level (version, channels, rules...), got {describe_type(doc.data)}",
                ),
            ]
        )

    substituted = substitute_tree(doc.data, os.environ if env is None else env)
    data: dict[str, Any] = substituted.data
    issues: list[Issue] = [Issue(p, m) for p, m in substituted.errors]
    # A value whose substitution failed, or that YAML could not build, would fail
    # validation too: report it once.
    unusable = [p for p, _ in substituted.errors] + doc.invalid_paths

    config, structural = validate_structure(data)
    templates_value = data.get("templates")
    templates = templates_value if isinstance(templates_value, str) else "templates"
    templates_dir = Path(os.path.abspath(base_dir / templates))
    references = validate_references(data, registry, templates_dir, rules_valid=config is not None)

    for issue in (*structural, *references.issues):
        if not any(_within(issue.path, bad) for bad in unusable):
            issues.append(issue)

    problems = _located(doc, issues, substituted.secrets)
    if problems or config is None:
        raise ConfigError(problems)
    config = resolve_paths(config, base_dir)
    return LoadedConfig(
        config=config,
        path=path,
        templates_dir=templates_dir,
        channel_configs=references.channel_configs,
        job_options=[references.job_options[i] for i in range(len(config.rules))],
        event_schemas=references.event_schemas,
    )


def resolve_paths(config: RouterConfig, base_dir: Path) -> RouterConfig:
    """Anchor the embedded queue's file and a relative ``sqlite:///`` state URL to ``base_dir``.

    ``base_dir`` is the folder of rules.yaml: every command (``router serve``, ``router dlq ...``)
    then opens the same files whatever its working directory, instead of creating new, empty ones.
    """
    broker, state = config.broker, config.state
    queue = Path(broker.embedded_path).expanduser()
    if not queue.is_absolute():
        broker = broker.model_copy(update={"embedded_path": os.path.abspath(base_dir / queue)})
    prefix = "sqlite:///"
    rest = state.url[len(prefix) :] if state.url.startswith(prefix) else ""
    if rest and rest != ":memory:" and not rest.startswith("/"):
        state = state.model_copy(update={"url": prefix + os.path.abspath(base_dir / rest)})
    if broker is config.broker and state is config.state:
        return config
    return config.model_copy(update={"broker": broker, "state": state})


def _within(path: KeyPath, ancestor: KeyPath) -> bool:
    return path[: len(ancestor)] == ancestor


def _located(doc: YamlDocument, issues: list[Issue], secrets: set[str]) -> list[Problem]:
    """Turn issues into located problems: deduplicated, in file order, with secrets scrubbed."""
    problems: list[Problem] = list(doc.problems)
    problems.extend(doc.problem(i.path, i.message, at_key=i.at_key) for i in issues)
    # Longest first, so a secret that contains another is scrubbed whole.
    scrub = sorted((s for s in secrets if len(s) >= _MIN_SECRET), key=len, reverse=True)
    unique: dict[Problem, None] = {}
    for problem in problems:
        message, path = problem.message, problem.path
        for secret in scrub:
            message = message.replace(secret, _REDACTED)
            path = path.replace(secret, _REDACTED)
        unique.setdefault(Problem(message, path, problem.file, problem.line, problem.column), None)
    return sorted(unique, key=lambda p: (p.line or 0, p.column or 0))
