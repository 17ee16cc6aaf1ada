"""What is watched, and which revisions were already handed to a build: a small table store
(enginewright.store_db). A revision is *claimed* by inserting (source, spec, revision) under a primary key
with `ON CONFLICT DO NOTHING`: of any number of watchers that see the same new revision at the same moment,
exactly one insert succeeds, and only that watcher announces it. A revision is never announced twice.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import Column, DateTime, String, Table, delete, func, select

from enginewright.errors import InputError
from enginewright.hashing import sha256_file
from enginewright.store_db import METADATA, announce_claimed, dialect_of, open_engine

WATCHED = Table(
    "enginewright_watched", METADATA,
    Column("source", String(1024), primary_key=True),
    Column("spec_path", String(4096), primary_key=True),
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
    spec_path: str


class WatchStore:
    def __init__(self, url: str):
        self.url = url

    @cached_property
    def engine(self):
        return open_engine(self.url)

    def add(self, source: str, spec_path: Path) -> Watched:
        if not spec_path.is_file():
            raise InputError(f"spec {str(spec_path)!r} does not exist; pass the build spec to run on new revisions")
        entry = Watched(source, str(spec_path.resolve()))
        with self.engine.begin() as connection:
            connection.execute(self._insert_ignoring_duplicates(WATCHED, source=entry.source, spec_path=entry.spec_path))
        return entry

    def remove(self, source: str) -> int:
        with self.engine.begin() as connection:
            return connection.execute(delete(WATCHED).where(WATCHED.c.source == source)).rowcount

    def list(self) -> list[Watched]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(WATCHED.c.source, WATCHED.c.spec_path).order_by(WATCHED.c.source))
            return [Watched(*row) for row in rows]

    def claim(self, source: str, spec_path: str, revision: str) -> bool:
        """True for exactly one caller per (source, spec contents, revision), ever."""
        spec_sha256 = sha256_file(Path(spec_path))
        with self.engine.begin() as connection:
            inserted = connection.execute(self._insert_ignoring_duplicates(
                CLAIMED, source=source, spec_sha256=spec_sha256, revision=revision))
            return inserted.rowcount == 1

    def announce_once(self, source: str, spec_path: str, revision: str,
                      announce: Callable[[str, str, str], None]) -> bool:
        """Claim `revision` and announce it; True when this caller did. A failed announcement releases the claim,
        so the next watcher tick (or webhook) claims it again: a revision is neither announced twice nor lost."""
        return announce_claimed(lambda: self.claim(source, spec_path, revision),
                                lambda: self.release(source, spec_path, revision),
                                lambda: announce(source, spec_path, revision))

    def release(self, source: str, spec_path: str, revision: str) -> None:
        """Undo a claim whose announcement failed."""
        with self.engine.begin() as connection:
            connection.execute(delete(CLAIMED).where(
                (CLAIMED.c.source == source) & (CLAIMED.c.spec_sha256 == sha256_file(Path(spec_path)))
                & (CLAIMED.c.revision == revision)))

    def claimed(self, source: str) -> builtins.list[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(CLAIMED.c.revision).where(CLAIMED.c.source == source)
                                      .order_by(CLAIMED.c.claimed_at))
            return [row[0] for row in rows]

    def _insert_ignoring_duplicates(self, table: Table, **values):
        return dialect_of(self.engine).insert(table).values(**values).on_conflict_do_nothing()
