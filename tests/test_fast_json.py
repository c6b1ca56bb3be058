"""router.support.fast_json: the activity history's JSON is the standard library's, only faster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from router.support import fast_json


def standard(value: Any) -> str:
    def text(item: Any) -> str:
        return item.isoformat() if hasattr(item, "isoformat") else str(item)

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=text)


@pytest.mark.parametrize(
    "value",
    [
        {"user": {"name": "Ada Lovelace", "city": "Zürich"}, "n": [1, 2.5, None, True]},
        {"at": datetime(2026, 12, 3, 13, 0, 0, 123456, tzinfo=UTC)},
        {"big": 2**70, "small": -(2**70)},  # beyond 64 bits: orjson refuses, the standard path takes it
        {1: "a key that is no string"},
        {"price": Decimal("1.50"), "tags": {"x"}},
        "emoji 🚀 and \u2028 separators",
    ],
)
def test_output_is_the_standard_librarys_compact_json(value: Any) -> None:
    assert fast_json.dumps(value) == standard(value)


def test_not_a_number_becomes_null_so_that_every_reader_can_parse_it() -> None:
    text = fast_json.dumps({"ratio": float("nan")})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in stored JSON")) == {"ratio": None}
