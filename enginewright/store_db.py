"""The small SQL store the watcher and the promotion relay share: a SQLAlchemy URL (`ENGINEWRIGHT_WATCH_DB`),
a SQLite file under `home` by default, the stack's PostgreSQL in production. Tables are created on first use."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import MetaData, create_engine
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


def dialect_of(engine: Engine):
    """The dialect module whose `insert` knows ON CONFLICT (PostgreSQL and SQLite both do)."""
    return postgresql if engine.dialect.name == "postgresql" else sqlite
