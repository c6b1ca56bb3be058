"""The ``with:`` block of an ``audit.record`` rule."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""A table name: a plain SQL identifier (PostgreSQL truncates beyond 63 characters)."""

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")


class AuditOptions(BaseModel):
    """Where ``audit.record`` writes: ``url`` (SQLite file or PostgreSQL database) and ``table``."""

    # The URL may carry a password: keep the raw input out of validation errors and reprs.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: SecretStr = Field(
        default=SecretStr("sqlite:///.router/audit.db"),
        description="sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user:pass@host/db.",
    )
    table: str = Field("events", description="Table to write to; created if missing.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme == "sqlite":
            if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
                raise ValueError("a SQLite url is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        elif scheme in POSTGRES_SCHEMES:
            if importlib.util.find_spec("psycopg") is None:
                raise ValueError("a postgresql url needs the psycopg driver: pip install 'router-audit[postgres]'")
        else:
            shown = f"'{scheme}'" if scheme else "none"
            raise ValueError(f"url scheme {shown} is not supported; use sqlite:///path.db or postgresql://...")
        return value

    @field_validator("table")
    @classmethod
    def _safe_identifier(cls, value: str) -> str:
        # The name is put into SQL (quoted); a strict pattern keeps injection and quoting surprises out.
        if not IDENTIFIER.match(value):
            raise ValueError(
                f"table {value!r} is not a plain identifier: letters, digits and _, not starting with a digit, "
                "at most 63 characters"
            )
        return value

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        """Which database the url names."""
        return "sqlite" if self.url.get_secret_value().lower().startswith("sqlite:") else "postgresql"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (relative paths are relative to the router's working directory)."""
        return Path(self.url.get_secret_value()[len(SQLITE_PREFIX) :])

    def describe(self) -> str:
        """Where records go, without credentials, for logs."""
        if self.backend == "sqlite":
            return f"sqlite:{self.sqlite_path} table {self.table}"
        rest = self.url.get_secret_value().partition("://")[2]
        host = rest.rpartition("@")[2]  # drop user:password@
        return f"postgresql://{host.split('?')[0]} table {self.table}"
