"""Versioned schema upgrades: the packaged db/migrations/NNN_name.sql files, applied once each."""

from __future__ import annotations

import re
from importlib import resources

from . import transaction


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every packaged migrations/NNN_name.sql, in order."""
    found = []
    for entry in resources.files("cvunet_matting.db").joinpath("migrations").iterdir():
        match = re.match(r"(\d+)_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    return sorted(found)


def upgrade() -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; returns those applied."""
    applied = []
    with transaction() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, sql in migrations():
        with transaction() as cur:
            # An advisory lock: two hosts upgrading at once apply each migration once.
            cur.execute("SELECT pg_advisory_xact_lock(7311)")
            cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
            if cur.fetchone():
                continue
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
