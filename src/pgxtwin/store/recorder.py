"""What a CDS call writes, with group commit: the audit entry of its twin read and its cards' rules.

Under load, one write transaction per record serialises every call on the database's commit
(SQLite: an fsync each, ``synchronous=FULL``; with concurrent writers also the busy-handler's
sleeps).  Here the calls waiting to write share one transaction: the first waiting call writes the
records of every call queued so far, the others wait for that commit, so a call still returns only
after its records are durable.  The rows are those ``TwinStore.state_at`` (audit entry
``read_state``) and ``ServiceStore.record_card`` write one by one.

The twin read itself: a twin at a version never changes, so a state read once (through the audited
``TwinStore.state_at``) is kept per (patient, version); later reads check the current version and
record their audit entry here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert

from .engine import WRITE
from .models import AuditEntry, CdsCard
from .repository import TwinStore
from ..twin.state import TwinState

__all__ = ["GroupCommit", "Recorder"]


@dataclass
class _Ticket:
    audit: list[dict[str, Any]]
    cards: list[dict[str, Any]]
    done: bool = False
    error: BaseException | None = field(default=None)


class GroupCommit:
    """Leader/follower group commit: ``submit`` returns once its rows are committed (or raises the
    batch's error)."""

    def __init__(self, write: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._busy = False

    def submit(self, audit: list[dict[str, Any]], cards: list[dict[str, Any]]) -> None:
        ticket = _Ticket(audit, cards)
        with self._cond:
            self._queue.append(ticket)
            while self._busy and not ticket.done:
                self._cond.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return
            batch, self._queue, self._busy = self._queue, [], True
        error: BaseException | None = None
        try:
            self._write([a for t in batch for a in t.audit], [c for t in batch for c in t.cards])
        except BaseException as exc:  # noqa: BLE001 - handed to every call of the batch, then re-raised
            error = exc
        with self._cond:
            for t in batch:
                t.done, t.error = True, error
            self._busy = False
            self._cond.notify_all()
        if error is not None:
            raise error


class Recorder:
    """Twin reads (cached per version, audited) and card records of the CDS services."""

    def __init__(self, twins: TwinStore, max_states: int = 4096) -> None:
        self.twins = twins
        self._states: OrderedDict[tuple[str, int], TwinState] = OrderedDict()
        self._max = max_states
        self._lock = threading.Lock()
        self._commit = GroupCommit(self._write)

    def _write(self, audit: list[dict[str, Any]], cards: list[dict[str, Any]]) -> None:
        with self.twins.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                if audit:
                    conn.execute(insert(AuditEntry), audit)
                if cards:
                    conn.execute(insert(CdsCard), cards)

    def read_twin(self, patient_id: str, *, actor: str, entry_point: str) -> tuple[TwinState, dict[str, Any] | None]:
        """The twin's current state and the audit row still to record (None when ``state_at`` recorded
        it); :class:`~pgxtwin.store.errors.UnknownTwinError` when there is no twin."""
        version = self.twins.current_version(patient_id)
        key = (patient_id, version)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
        if state is None:
            state = self.twins.state_at(patient_id, version, actor=actor, entry_point=entry_point)
            with self._lock:
                self._states[key] = state
                while len(self._states) > self._max:
                    self._states.popitem(last=False)
            return state, None
        return state, {"at": _now(), "actor": actor, "entry_point": entry_point, "patient_id": patient_id,
                       "action": "read_state", "version": version, "outcome": "ok", "detail": None}

    def record(self, audit: dict[str, Any] | None, cards: list[tuple[str, str, str, str | None]]) -> None:
        """Commit the call's audit row and its cards (uuid, service id, rule, patient id) together."""
        if audit is None and not cards:
            return
        now = _now()
        rows = [{"card_uuid": u, "service_id": s, "rule": r[:200], "patient_id": p, "created_at": now}
                for u, s, r, p in cards]
        self._commit.submit([audit] if audit is not None else [], rows)


def _now() -> datetime:
    return datetime.now(timezone.utc)
