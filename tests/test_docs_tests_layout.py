"""docs/architecture.md's Tests section: the shared test support it names exists, and stays the only copy.

The section tells the next engineer where to find the one ``until``, the one event builder and
the config tests' plugins; these tests fail when a named module moves or when a test file grows
its own event envelope again.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
TESTS = ROOT / "tests"


def section_text() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("\n## Tests\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_support_module_the_section_names_exists() -> None:
    named = set(re.findall(r"`((?:tests|bench)/[\w/]+\.py)`", section_text()))
    assert {"tests/polling.py", "tests/builders.py", "tests/config_plugins.py"} <= named
    assert sorted(path for path in named if not (ROOT / path).is_file()) == []


def test_only_the_builders_module_spells_the_event_envelope() -> None:
    # A literal {"type": ...} dict dumped to JSON is a second place that knows the envelope;
    # hand-written bad bodies are bytes literals, which this does not match.
    envelope = re.compile(r"json\.dumps\(\{\s*\"type\"")
    spelled = [
        path.name
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != "builders.py" and envelope.search(path.read_text(encoding="utf-8"))
    ]
    assert spelled == []


def test_no_test_file_loads_the_config_plugins_by_path() -> None:
    by_path = re.compile(r"spec_from_file_location\(.*plugins\.py")
    loaders = [
        path.name for path in sorted(TESTS.glob("test_*.py")) if by_path.search(path.read_text(encoding="utf-8"))
    ]
    assert loaders == []
