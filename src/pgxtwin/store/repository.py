"""The append-only twin store: create a twin, append events with optimistic concurrency, read any
past version back, and keep an audit log of every access.

::

    store = TwinStore()                                    # ./pgxtwin-data/pgxtwin.db or $PGXTWIN_DATABASE_URL
    store.create_twin("pat-123")                           # version 0
    state = store.append("pat-123", event, expected_version=0)   # version 1
    store.state_at("pat-123", 1); store.history("pat-123")

Every append runs in one transaction: the compare-and-set of ``twins.current_version`` from
``expected_version`` to ``expected_version + 1``, the validation of the event against the state
at ``expected_version`` (:func:`pgxtwin.twin.state.apply`), the insert of the event and its audit
entry.  A write whose ``expected_version`` is stale is refused with :class:`ConcurrentWriteError`;
a crash before the commit leaves the last committed version as it was.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import PgxInputError
from ..twin.state import Event, InvalidEventError, TwinState, apply, parse_event
from .engine import WRITE, create_store_engine, migrate
from .errors import ConcurrentWriteError, StoreError, TwinExistsError, UnknownTwinError, VersionNotFoundError
from .models import AuditEntry, Twin, TwinEvent

__all__ = ["AuditRecord", "HistoryEntry", "TwinStore"]


@dataclass(frozen=True)
class HistoryEntry:
    """One version of a twin: the event that made it."""

    version: int
    event_type: str
    summary: str
    created_at: datetime
    actor: str
    entry_point: str


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    patient_id: str | None
    action: str
    entry_point: str
    version: int | None
    outcome: str
    detail: str | None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


class TwinStore:
    """Twins and their events in a SQL database (SQLite file or PostgreSQL).

    ``actor`` and ``entry_point`` (e.g. ``"cli"``, ``"api"``, ``"fhir-sync"``) are written to every
    event and audit entry; each call may override them.  ``before_commit`` is a test hook called
    inside the append transaction just before it commits (used to crash a writer mid-transaction).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        actor: str | None = None,
        entry_point: str = "api",
        busy_timeout_s: float = 30.0,
        before_commit: Callable[[], None] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.engine = engine if engine is not None else create_store_engine(url, busy_timeout_s=busy_timeout_s)
        self.actor = actor or _default_actor()
        self.entry_point = entry_point
        self._before_commit = before_commit
        self._latest: dict[str, TwinState] = {}  # per patient, the newest state folded here (events never change)
        self.schema_revision = migrate(self.engine)

    # --- lifecycle
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _who(self, actor: str | None, entry_point: str | None) -> tuple[str, str]:
        # the columns hold 200 / 100 characters (an OAuth issuer|subject can be longer)
        return (actor or self.actor)[:200], (entry_point or self.entry_point)[:100]

    def _audit(self, conn: Connection, *, actor: str, entry_point: str, patient_id: str | None, action: str,
               version: int | None, outcome: str = "ok", detail: str | None = None) -> None:
        conn.execute(insert(AuditEntry).values(
            at=_now(), actor=actor, entry_point=entry_point, patient_id=patient_id, action=action,
            version=version, outcome=outcome, detail=None if detail is None else detail[:2000],
        ))

    def _audit_refusal(self, *, actor: str, entry_point: str, patient_id: str | None, action: str,
                       version: int | None, error: Exception) -> None:
        # the refused write's transaction was rolled back; its audit entry has a transaction of its own
        outcome = {ConcurrentWriteError: "conflict", UnknownTwinError: "unknown_twin"}.get(type(error), "refused")
        with self._write() as conn:
            self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id, action=action,
                        version=version, outcome=outcome, detail=str(error))

    def audit(self, patient_id: str | None, action: str, *, actor: str | None = None, entry_point: str | None = None,
              outcome: str = "ok", version: int | None = None, detail: str | None = None) -> None:
        """Record an access made outside this class (e.g. an API evaluation or export of a twin)."""
        actor, entry_point = self._who(actor, entry_point)
        with self._write() as conn:
            self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id, action=action,
                        version=version, outcome=outcome, detail=detail)

    # --- writes
    def create_twin(self, patient_id: str, *, actor: str | None = None, entry_point: str | None = None) -> TwinState:
        """A new, empty twin (version 0) for the EHR/FHIR Patient id ``patient_id``."""
        actor, entry_point = self._who(actor, entry_point)
        try:
            state = TwinState.empty(patient_id)
            with self._write() as conn:
                exists = conn.execute(select(Twin.id).where(Twin.patient_id == patient_id)).first()
                if exists is not None:
                    raise TwinExistsError(patient_id)
                conn.execute(insert(Twin).values(
                    patient_id=patient_id, current_version=0, created_at=_now(), created_by=actor))
                self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id,
                            action="create_twin", version=0)
        except IntegrityError:
            error = TwinExistsError(patient_id)
            self._audit_refusal(actor=actor, entry_point=entry_point, patient_id=patient_id, action="create_twin",
                                version=None, error=error)
            raise error from None
        except (StoreError, PgxInputError) as exc:
            self._audit_refusal(actor=actor, entry_point=entry_point, patient_id=patient_id[:64],
                                action="create_twin", version=None, error=exc)
            raise
        return state

    def append(
        self,
        patient_id: str,
        event: Event | dict[str, Any],
        expected_version: int,
        *,
        actor: str | None = None,
        entry_point: str | None = None,
    ) -> TwinState:
        """Append ``event`` as version ``expected_version + 1`` and return the new state.

        Raises :class:`ConcurrentWriteError` when the twin is no longer at ``expected_version``,
        :class:`~pgxtwin.twin.state.InvalidEventError` for an event that is invalid in itself or
        against the state, :class:`UnknownTwinError` for an unknown patient; nothing is written then.
        """
        return self.append_all(patient_id, [event], expected_version, actor=actor, entry_point=entry_point)

    def append_all(
        self,
        patient_id: str,
        events: list[Event | dict[str, Any]],
        expected_version: int,
        *,
        actor: str | None = None,
        entry_point: str | None = None,
    ) -> TwinState:
        """Append ``events`` as versions ``expected_version + 1 ..`` in one transaction: all of them or,
        on any refusal (stale version, an event invalid against the state, a crash), none (e.g. the
        facts of one imported FHIR Bundle)."""
        actor, entry_point = self._who(actor, entry_point)
        try:
            if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
                raise InvalidEventError(f"expected_version={expected_version!r} must be an integer >= 0",
                                        field="expected_version")
            parsed = [parse_event(e) for e in events]
            with self._write() as conn:
                twin_id, current = self._twin(conn, patient_id)
                if current != expected_version:
                    raise ConcurrentWriteError(patient_id, expected_version, current)
                state = self._fold(conn, patient_id, twin_id, expected_version)
                for event in parsed:
                    # the version moves by one per event (the store's trigger allows no jump)
                    moved = conn.execute(
                        update(Twin)
                        .where(Twin.id == twin_id, Twin.current_version == state.version)
                        .values(current_version=state.version + 1)
                    )
                    if moved.rowcount != 1:  # PostgreSQL: another writer committed while we waited for the row
                        raise ConcurrentWriteError(patient_id, expected_version, None)
                    state = apply(state, event)
                    conn.execute(insert(TwinEvent).values(
                        twin_id=twin_id, version=state.version, event_type=event.type,
                        payload=event.model_dump(mode="json"), created_at=_now(), actor=actor, entry_point=entry_point,
                    ))
                    self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id,
                                action=f"append:{event.type}", version=state.version, detail=event.summary())
                if self._before_commit is not None:
                    self._before_commit()
        except IntegrityError:
            error = ConcurrentWriteError(patient_id, expected_version, None)
            self._audit_refusal(actor=actor, entry_point=entry_point, patient_id=patient_id, action="append",
                                version=None, error=error)
            raise error from None
        except (StoreError, PgxInputError) as exc:
            self._audit_refusal(actor=actor, entry_point=entry_point, patient_id=patient_id[:64], action="append",
                                version=None, error=exc)
            raise
        self._latest[patient_id] = state
        return state

    # --- reads
    def _twin(self, conn: Connection, patient_id: str) -> tuple[int, int]:
        row = conn.execute(select(Twin.id, Twin.current_version).where(Twin.patient_id == patient_id)).first()
        if row is None:
            raise UnknownTwinError(patient_id)
        return int(row[0]), int(row[1])

    def _fold(self, conn: Connection, patient_id: str, twin_id: int, version: int) -> TwinState:
        cached = self._latest.get(patient_id)
        state = cached if cached is not None and cached.version <= version else TwinState.empty(patient_id)
        if state.version == version:
            return state
        rows = conn.execute(
            select(TwinEvent.version, TwinEvent.payload)
            .where(TwinEvent.twin_id == twin_id, TwinEvent.version > state.version, TwinEvent.version <= version)
            .order_by(TwinEvent.version)
        ).all()
        for number, payload in rows:
            if number != state.version + 1:
                raise StoreError(f"twin {patient_id!r}: event {state.version + 1} is missing from the store")
            state = apply(state, parse_event(payload, trusted=True))
        if state.version != version:
            raise StoreError(f"twin {patient_id!r}: events up to {version} expected, found {state.version}")
        if cached is None or state.version > cached.version:
            self._latest[patient_id] = state
        return state

    def current_version(self, patient_id: str) -> int:
        with self._read() as conn:
            return self._twin(conn, patient_id)[1]

    def state_at(self, patient_id: str, version: int | None = None, *, actor: str | None = None,
                 entry_point: str | None = None) -> TwinState:
        """The twin at ``version`` (default: the current one): the fold of its first ``version`` events."""
        actor, entry_point = self._who(actor, entry_point)
        with self._read() as conn:
            twin_id, current = self._twin(conn, patient_id)
            wanted = current if version is None else version
            if isinstance(wanted, bool) or not isinstance(wanted, int) or not 0 <= wanted <= current:
                raise VersionNotFoundError(patient_id, wanted, current)
            state = self._fold(conn, patient_id, twin_id, wanted)
        with self._write() as conn:
            self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id, action="read_state",
                        version=wanted)
        return state

    def history(self, patient_id: str, *, actor: str | None = None, entry_point: str | None = None) -> list[HistoryEntry]:
        """Every version after 0, oldest first, with a one-line summary of its event."""
        actor, entry_point = self._who(actor, entry_point)
        with self._read() as conn:
            twin_id, current = self._twin(conn, patient_id)
            rows = conn.execute(
                select(TwinEvent.version, TwinEvent.event_type, TwinEvent.payload, TwinEvent.created_at,
                       TwinEvent.actor, TwinEvent.entry_point)
                .where(TwinEvent.twin_id == twin_id, TwinEvent.version <= current)
                .order_by(TwinEvent.version)
            ).all()
            entries = [
                HistoryEntry(row.version, row.event_type, parse_event(row.payload, trusted=True).summary(),
                             row.created_at, row.actor, row.entry_point)
                for row in rows
            ]
        with self._write() as conn:
            self._audit(conn, actor=actor, entry_point=entry_point, patient_id=patient_id, action="read_history",
                        version=current)
        return entries

    def events(self, patient_id: str, up_to: int | None = None) -> list[Event]:
        """The events of a twin in order (up to ``up_to`` inclusive)."""
        with self._read() as conn:
            twin_id, current = self._twin(conn, patient_id)
            last = current if up_to is None else min(up_to, current)
            rows = conn.execute(
                select(TwinEvent.payload).where(TwinEvent.twin_id == twin_id, TwinEvent.version <= last)
                .order_by(TwinEvent.version)
            ).scalars().all()
        return [parse_event(payload, trusted=True) for payload in rows]

    def patients(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(Twin.patient_id).order_by(Twin.patient_id)).scalars())

    def audit_log(self, patient_id: str | None = None) -> list[AuditRecord]:
        with self._read() as conn:
            a = AuditEntry
            query = select(a.at, a.actor, a.patient_id, a.action, a.entry_point, a.version, a.outcome, a.detail)
            if patient_id is not None:
                query = query.where(a.patient_id == patient_id)
            return [AuditRecord(*row) for row in conn.execute(query.order_by(a.id))]
