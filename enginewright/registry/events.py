"""Announcing to Prefect: an event that a deployment trigger turns into a run, or a loud failure.

An event sent to Prefect's ephemeral API (no `PREFECT_API_URL`: a temporary in-process server) reaches no
deployment, so whoever claimed a revision or an alias change would hold it for good and start nothing. Both
announcers (the watcher's and the promotion's) therefore refuse to send without a Prefect server, and fail when
Prefect does not take the event; their claim is then released (`store_db.announce_claimed`).
"""

from __future__ import annotations

from typing import Any

from enginewright.errors import AnnounceError, InputError


def require_prefect_server(what: str) -> None:
    """One InputError line when no Prefect server is configured for `what` (a CLI action or a flow)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise InputError(f"{what} needs a Prefect server: set PREFECT_API_URL (the stack's env file has it); "
                         "its deployments run what is announced")


def announce_event(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    from prefect.events import emit_event

    require_prefect_server(f"announcing {event}")
    if emit_event(event=event, resource=resource, payload=payload) is None:
        raise AnnounceError(f"Prefect did not take the event {event} for {resource['prefect.resource.id']}")
