"""The small SQL store the watcher and the promotion relay share: a SQLAlchemy URL (`ENGINEWRIGHT_WATCH_DB`),
a SQLite file under `home` by default, the stack's PostgreSQL in production. Tables are created on first use."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, MetaData, Table, create_engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

METADATA = MetaData()


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    for attempt in range(5):  # several watchers or relays may create the tables at once
        try:
            METADATA.create_all(engine)
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    return engine


def announce_claimed(claim: Callable[[], bool], release: Callable[[], None], announce: Callable[[], None]) -> bool:
    """Announce only what this caller claimed; a failed announcement releases the claim, so the next caller (a
    later tick, webhook or poll) claims it again: nothing is announced twice, nothing is lost."""
    if not claim():
        return False
    try:
        announce()
    except Exception:
        release()
        raise
    return True


def dialect_of(bind: Engine | Connection):
    """The dialect module whose `insert` knows ON CONFLICT (PostgreSQL and SQLite both do)."""
    return postgresql if bind.dialect.name == "postgresql" else sqlite


def hold_until_commit(connection: Connection, table: Table, key: str) -> None:
    """Hold `key` until `connection`'s transaction ends; another caller holding the same key waits.

    PostgreSQL: a transaction-level advisory lock on the key's hash. SQLite has one writer at a time and begins
    a transaction lazily, so a write that changes nothing (an UPDATE of no row of `table`) takes the database's
    write lock at once; a transaction that only read would hold nothing until its first write."""
    if connection.dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        connection.execute(select(func.pg_advisory_xact_lock(lock_id)))
    else:
        column = next(iter(table.c)).name
        connection.exec_driver_sql(f"UPDATE {table.name} SET {column} = {column} WHERE 0")
