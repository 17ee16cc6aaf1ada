"""What is watched, and which revisions were already handed to a build: a small table store
(enginewright.registry.store_db). A revision is *claimed* by inserting (source, spec, revision) under a primary key
with `ON CONFLICT DO NOTHING`: of any number of watchers that see the same new revision at the same moment,
exactly one insert succeeds, and only that watcher announces it. A revision is never announced twice.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Column, DateTime, String, Table, Text, delete, func, select

from enginewright.registry.store_db import METADATA, announce_claimed, dialect_of, open_engine

# A watch keeps its spec's *content* (with paths resolved when it was added), not a path on the machine that ran
# `watch add`: any worker can build it, and an edited spec file changes nothing already watched or claimed.
# (Before 0.2 the table was `enginewright_watched` with a spec path; such watches must be added again.)
WATCHED = Table(
    "enginewright_watches", METADATA,
    Column("source", String(1024), primary_key=True),
    Column("spec_sha256", String(64), primary_key=True),
    Column("spec_yaml", Text, nullable=False),
    Column("spec_name", String(4096), nullable=False),  # where it was read from, for `watch list`
    Column("added_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
CLAIMED = Table(
    "enginewright_claimed_revisions", METADATA,
    Column("source", String(1024), primary_key=True),
    Column("spec_sha256", String(64), primary_key=True),
    Column("revision", String(256), primary_key=True),
    Column("claimed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


@dataclass(frozen=True)
class Watched:
    source: str
    spec_sha256: str
    spec_yaml: str
    spec_name: str


class WatchStore:
    def __init__(self, url: str):
        self.url = url

    @cached_property
    def engine(self):
        return open_engine(self.url)

    def add(self, source: str, spec_yaml: str, spec_name: str) -> Watched:
        entry = Watched(source, hashlib.sha256(spec_yaml.encode()).hexdigest(), spec_yaml, spec_name)
        with self.engine.begin() as connection:
            connection.execute(self._insert_ignoring_duplicates(
                WATCHED, source=entry.source, spec_sha256=entry.spec_sha256, spec_yaml=entry.spec_yaml,
                spec_name=entry.spec_name))
        return entry

    def remove(self, source: str) -> int:
        with self.engine.begin() as connection:
            return connection.execute(delete(WATCHED).where(WATCHED.c.source == source)).rowcount

    def list(self) -> list[Watched]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(WATCHED.c.source, WATCHED.c.spec_sha256, WATCHED.c.spec_yaml,
                                             WATCHED.c.spec_name).order_by(WATCHED.c.source, WATCHED.c.added_at))
            return [Watched(*row) for row in rows]

    def claim(self, source: str, spec_sha256: str, revision: str) -> bool:
        """True for exactly one caller per (source, spec contents, revision), ever."""
        with self.engine.begin() as connection:
            inserted = connection.execute(self._insert_ignoring_duplicates(
                CLAIMED, source=source, spec_sha256=spec_sha256, revision=revision))
            return inserted.rowcount == 1

    def announce_once(self, entry: Watched, revision: str, announce: Callable[[str, str, str], None]) -> bool:
        """Claim `revision` and announce it (source, spec YAML, revision); True when this caller did. A failed
        announcement releases the claim, so the next watcher tick (or webhook) claims it again: a revision is
        neither announced twice nor lost."""
        return announce_claimed(lambda: self.claim(entry.source, entry.spec_sha256, revision),
                                lambda: self.release(entry.source, entry.spec_sha256, revision),
                                lambda: announce(entry.source, entry.spec_yaml, revision))

    def release(self, source: str, spec_sha256: str, revision: str) -> None:
        """Undo a claim whose announcement failed."""
        with self.engine.begin() as connection:
            connection.execute(delete(CLAIMED).where(
                (CLAIMED.c.source == source) & (CLAIMED.c.spec_sha256 == spec_sha256)
                & (CLAIMED.c.revision == revision)))

    def claimed(self, source: str) -> builtins.list[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(CLAIMED.c.revision).where(CLAIMED.c.source == source)
                                      .order_by(CLAIMED.c.claimed_at))
            return [row[0] for row in rows]

    def _insert_ignoring_duplicates(self, table: Table, **values):
        return dialect_of(self.engine).insert(table).values(**values).on_conflict_do_nothing()
