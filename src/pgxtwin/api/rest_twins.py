"""REST resources of the twins: create, list, read (any version), history, and the writes
(covariates, medications, drug levels, raw events).

Concurrency: every twin has a version (the number of its events), sent as ``ETag: "<version>"``.
A write to an existing twin must carry ``If-Match: "<version>"`` (428 without it); when the twin
has moved on, the write is refused with 412 and nothing is written (re-read, re-decide, retry).
A write of several events appends them one version each, after checking them all (an invalid one
writes nothing).  Writes accept ``Idempotency-Key`` (see :mod:`pgxtwin.api.idempotency`).

Access: the token's scopes (``*/*.read``, ``*/*.write``); a ``patient/`` token reaches only its own
patient (403 otherwise, before anything about the other twin is looked up).  Every access is in
the store's audit log with the token's ``issuer|subject`` and ``api:<METHOD> <route>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from ..knowledge.drugs import resolve_drug
from ..errors import PgxInputError
from ..store.errors import ConcurrentWriteError
from ..store.models import Twin
from ..store.repository import TwinStore
from ..store.service import ServiceStore
from ..twin import workflow
from ..twin.state import Event, TwinState
from .auth import Principal, require
from .deps import service_store, twin_store
from .idempotency import IDEMPOTENCY_HEADER_DOC, check_key, request_hash, run_idempotent
from .rest_common import (
    ETAG_HEADER, PatientIdPath, decode_cursor, encode_cursor, entry_point, error_responses, etag, header_doc,
    if_match_version, json_response, next_url,
)
from .schemas import (
    AppendedEvent, CovariateIn, CovariatesIn, DemographicsIn, EventsIn, HistoryItem, HistoryPage, MedicationIn,
    ObservationIn, PatientPage, PhenotypeSummary, TwinCreate, TwinDocument, TwinSummary, WriteResult,
)

router = APIRouter(tags=["twins"])

IdempotencyKey = Header(None, alias="Idempotency-Key", description=IDEMPOTENCY_HEADER_DOC)
IfMatch = Header(None, alias="If-Match", description='the twin\'s current version as its ETag, e.g. "3"')
Limit = Query(20, ge=1, le=100, description="items per page")
Cursor = Query(None, min_length=1, max_length=200, description="next_cursor of the previous page")
WRITE_RESPONSES = {**error_responses(404, 412, 422, 428), 200: {"headers": ETAG_HEADER}}


async def json_body(request: Request) -> Any:
    """The request's JSON body as sent (before defaults or generated ids), for idempotency hashes."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # FastAPI answers the malformed body with a 400


# ---------------------------------------------------------------------------------------- events

def _demographics_event(demo: DemographicsIn, now: datetime) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "demographics_set", **demo.model_dump(mode="json", exclude_none=True)}
    if demo.age_years is not None:
        event["age_recorded_at"] = now.isoformat()
    return event


def _covariate_event(c: CovariateIn, now: datetime) -> dict[str, Any]:
    return {"type": "covariate_recorded", "covariate": c.covariate, "value": c.value, "unit": c.unit,
            "time": (c.time or now).isoformat()}


def _appended(state_before: TwinState, events: list[Event]) -> list[AppendedEvent]:
    return [AppendedEvent(version=state_before.version + i + 1, event_type=e.type, summary=e.summary())
            for i, e in enumerate(events)]


def _append_all(twins: TwinStore, state: TwinState, events: list[Event], *, actor: str, entry_point: str) -> TwinState:
    """Append checked ``events`` one version each, in one transaction (all or none)."""
    if not events:
        return state
    return twins.append_all(state.patient_id, events, state.version, actor=actor, entry_point=entry_point)


def _write_response(result: WriteResult, status_code: int = 200, **headers: str) -> Response:
    return json_response(result.model_dump(mode="json"), status_code, {"ETag": etag(result.version), **headers})


# ---------------------------------------------------------------------------------------- create / read

@router.post("/patients", status_code=201, response_model=WriteResult, summary="Create a twin",
             responses={**error_responses(409, 422),
                        201: {"headers": {**ETAG_HEADER, "Location": header_doc("/patients/{patient_id}")}}})
def create_twin(body: TwinCreate, request: Request, raw: Any = Depends(json_body),
                principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
                service: ServiceStore = Depends(service_store),
                idempotency_key: str | None = IdempotencyKey) -> Response:
    """A new twin (version 0) with, optionally, its demographics, covariates and genotype as its
    first events (all checked before the twin is created)."""
    principal.check("write", body.patient_id)
    key = check_key(idempotency_key)
    actor, where = principal.actor, entry_point(request)

    def write() -> Response:
        now = workflow.now()
        events: list[dict[str, Any]] = []
        if body.demographics is not None:
            events.append(_demographics_event(body.demographics, now))
        events += [_covariate_event(c, now) for c in body.covariates]
        if body.genotype is not None:
            events.append({"type": "genotype_set", "call_result": body.genotype.model_dump(mode="json"),
                           "recorded_at": now.isoformat()})
        parsed = workflow.validate_events(TwinState.empty(body.patient_id), events)
        state = twins.create_twin(body.patient_id, actor=actor, entry_point=where)
        appended = _appended(state, parsed)
        state = _append_all(twins, state, parsed, actor=actor, entry_point=where)
        result = WriteResult(patient_id=state.patient_id, version=state.version, appended=appended)
        return _write_response(result, 201, Location=f"/patients/{state.patient_id}")

    return run_idempotent(service, actor, key, request_hash(request, raw), write)


def _twin_page(twins: TwinStore, after: str | None, limit: int, only: str | None = None) -> list[tuple[str, int]]:
    """Up to ``limit`` (patient id, current version) after ``after`` by patient id (only the twin of
    ``only`` when given): one query per page, whatever its size."""
    query = select(Twin.patient_id, Twin.current_version).order_by(Twin.patient_id).limit(limit)
    if after is not None:
        query = query.where(Twin.patient_id > after)
    if only is not None:
        query = query.where(Twin.patient_id == only)
    with twins.engine.connect() as conn, conn.begin():
        return [(str(pid), int(version)) for pid, version in conn.execute(query)]


@router.get("/patients", response_model=PatientPage, summary="List twins", responses=error_responses())
def list_twins(request: Request, limit: int = Limit, cursor: str | None = Cursor,
               principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """Twins by patient id, a page at a time; a ``patient/`` token sees only its own patient's twin."""
    after = decode_cursor(cursor, "patients", str)
    if principal.may("read", None):
        only = None
    elif principal.patient is not None and principal.may("read", principal.patient):
        only = principal.patient
    else:
        raise HTTPException(403, "token's scopes do not allow listing twins")
    rows = _twin_page(twins, after, limit + 1, only)  # one more: is there a next page?
    page = rows[:limit]
    items = [TwinSummary(patient_id=p, version=v, href=f"/patients/{p}") for p, v in page]
    more = encode_cursor("patients", page[-1][0]) if len(rows) > limit else None
    twins.audit(None, "list_twins", actor=principal.actor, entry_point=entry_point(request),
                detail=f"{len(items)} twins listed")
    body = PatientPage(items=items, next_cursor=more, next=next_url(request, more))
    return json_response(body.model_dump(mode="json"))


@router.get("/patients/{patient_id}", response_model=TwinDocument, summary="Read a twin",
            responses={**error_responses(404), 200: {"headers": ETAG_HEADER}})
def read_twin(patient_id: PatientIdPath, request: Request,
              version: int | None = Query(None, ge=0, le=2**62, description="a past version (default: the current one)"),
              principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """The twin at its current version, or as it was at ``version``; ``ETag`` is that version."""
    principal.check("read", patient_id)
    state = twins.state_at(patient_id, version, actor=principal.actor, entry_point=entry_point(request))
    latest = twins.current_version(patient_id)
    snapshot = state.covariates_at(workflow.now())
    phenotypes = {
        gene: PhenotypeSummary(status=r.status, diplotypes=r.diplotypes[:2], phenotype=r.phenotype,
                               activity_score=r.activity_score)
        for gene, r in state.genotype.genes.items() if r.phenotype != "n/a" or r.status == "outside_call"
    }
    body = {"patient_id": state.patient_id, "version": state.version, "latest_version": latest,
            "covariates": snapshot.model_dump(mode="json"),
            "phenotypes": {g: p.model_dump(mode="json") for g, p in phenotypes.items()},
            "state": state.model_dump(mode="json")}
    return json_response(body, headers={"ETag": etag(state.version)})


@router.get("/patients/{patient_id}/history", response_model=HistoryPage, summary="A twin's versions",
            responses=error_responses(404))
def twin_history(patient_id: PatientIdPath, request: Request, limit: int = Limit, cursor: str | None = Cursor,
                 principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """Every version after 0, oldest first, with who made it, where, and a one-line summary of its event."""
    principal.check("read", patient_id)
    after = decode_cursor(cursor, "history", int)
    entries = twins.history(patient_id, actor=principal.actor, entry_point=entry_point(request))
    rest = [e for e in entries if after is None or e.version > after]
    page = rest[:limit]
    more = encode_cursor("history", page[-1].version) if len(rest) > limit else None
    items = [HistoryItem(version=e.version, event_type=e.event_type, summary=e.summary, created_at=e.created_at,
                         actor=e.actor, entry_point=e.entry_point) for e in page]
    body = HistoryPage(patient_id=patient_id, items=items, next_cursor=more, next=next_url(request, more))
    return json_response(body.model_dump(mode="json"))


# ---------------------------------------------------------------------------------------- writes

Build = Callable[[TwinState], tuple[list[Any], dict[str, Any]]]


def _conditional_write(request: Request, raw: Any, principal: Principal, twins: TwinStore, service: ServiceStore,
                       patient_id: str, if_match: str | None, idempotency_key: str | None, build: Build, *,
                       reestimate: str | None = None) -> Response:
    """Append the events ``build`` makes from the twin at the ``If-Match`` version (then, for a drug
    level, the drug's re-estimated posterior as one more event)."""
    principal.check("write", patient_id)
    expected = if_match_version(if_match)
    key = check_key(idempotency_key)
    actor, where = principal.actor, entry_point(request)

    def write() -> Response:
        current = twins.current_version(patient_id)
        if current != expected:
            twins.audit(patient_id, "append", actor=actor, entry_point=where, outcome="conflict", version=current,
                        detail=f"If-Match version {expected}, current {current}")
            raise ConcurrentWriteError(patient_id, expected, current)
        state = twins.state_at(patient_id, current, actor=actor, entry_point=where)
        events, fields = build(state)
        parsed = workflow.validate_events(state, events)
        appended = _appended(state, parsed)
        state = _append_all(twins, state, parsed, actor=actor, entry_point=where)
        notes: list[str] = []
        if reestimate is not None:
            state, estimate = _reestimate(twins, state, reestimate, appended, notes, actor=actor, entry_point=where)
            fields["estimate"] = estimate
        result = WriteResult(patient_id=patient_id, version=state.version, appended=appended, notes=notes, **fields)
        return _write_response(result)

    return run_idempotent(service, actor, key, request_hash(request, raw), write)


def _reestimate(twins: TwinStore, state: TwinState, drug: str, appended: list[AppendedEvent], notes: list[str], *,
                actor: str, entry_point: str) -> tuple[TwinState, dict[str, Any] | None]:
    """Re-estimate ``drug``'s posterior from all its levels and record it (as ``pgxtwin twin observe``)."""
    try:
        event, posterior = workflow.estimate_event(state, drug)
        if event is None:
            return state, None
        parsed = workflow.validate_events(state, [event])
    except ValueError as exc:  # PgxInputError, or no usable posterior (LinAlgError): the level stays recorded
        notes.append(f"not individualised: {exc}")
        return state, None
    try:
        new = _append_all(twins, state, parsed, actor=actor, entry_point=entry_point)
    except ConcurrentWriteError:
        notes.append("the level is recorded but the estimate is not: another write came first (record a level again"
                     " or read the twin and evaluate)")
        return state, None
    appended += _appended(state, parsed)
    notes.append(f"individualised from {posterior.n_observations} measured level(s)")
    return new, {"drug": drug, **posterior.as_dict()}


@router.post("/patients/{patient_id}/covariates", response_model=WriteResult, summary="Record covariates",
             responses=WRITE_RESPONSES)
def record_covariates(patient_id: PatientIdPath, body: CovariatesIn, request: Request, raw: Any = Depends(json_body),
                      principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
                      service: ServiceStore = Depends(service_store), if_match: str | None = IfMatch,
                      idempotency_key: str | None = IdempotencyKey) -> Response:
    """Covariate measurements (weight, height, serum creatinine, albumin; converted units) and/or demographics."""
    if not body.measurements and body.demographics is None:
        raise HTTPException(400, "measurements: give at least one measurement or demographics")

    def build(state: TwinState) -> tuple[list[Any], dict[str, Any]]:
        now = workflow.now()
        events = [_demographics_event(body.demographics, now)] if body.demographics is not None else []
        return events + [_covariate_event(c, now) for c in body.measurements], {}

    return _conditional_write(request, raw, principal, twins, service, patient_id, if_match, idempotency_key, build)


@router.post("/patients/{patient_id}/medications", response_model=WriteResult, summary="Start a medication",
             responses=WRITE_RESPONSES)
def start_medication(patient_id: PatientIdPath, body: MedicationIn, request: Request, raw: Any = Depends(json_body),
                     principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
                     service: ServiceStore = Depends(service_store), if_match: str | None = IfMatch,
                     idempotency_key: str | None = IdempotencyKey) -> Response:
    """Start a medication (dose resolved for this patient, e.g. per kg) and record the ``given`` doses."""
    from ..pk.drug_model import drug_model
    from ..pk.scenarios import parse_every, resolve_dose_mg

    def build(state: TwinState) -> tuple[list[Any], dict[str, Any]]:
        name = resolve_drug(body.drug)
        tau = parse_every(body.every)
        now = workflow.now()
        amount = resolve_dose_mg(drug_model(name), body.dose, state.patient_factors(now))
        first = body.start or now
        started: dict[str, Any] = {"type": "medication_started", "drug": name, "time": first.isoformat(),
                                   "dose": amount, "interval_h": tau, "route": body.route}
        started_event = workflow.validate_events(state, [started])[0]
        med_id = started_event.medication_id  # type: ignore[union-attr]
        doses = [{"type": "dose_recorded", "medication_id": med_id, "time": (first + timedelta(hours=k * tau)).isoformat(),
                  "amount": amount, **({"duration_h": body.infusion_h} if body.infusion_h is not None else {})}
                 for k in range(body.given)]
        return [started_event, *doses], {"medication_id": med_id}

    return _conditional_write(request, raw, principal, twins, service, patient_id, if_match, idempotency_key, build)


@router.post("/patients/{patient_id}/observations", response_model=WriteResult, summary="Record a drug level",
             responses=WRITE_RESPONSES)
def record_observation(patient_id: PatientIdPath, body: ObservationIn, request: Request, raw: Any = Depends(json_body),
                       principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
                       service: ServiceStore = Depends(service_store), if_match: str | None = IfMatch,
                       idempotency_key: str | None = IdempotencyKey) -> Response:
    """A measured drug level; the drug's individual posterior is then re-estimated from all its
    levels and recorded as one more version (``estimate``), as ``pgxtwin twin observe`` does."""
    if (body.time is None) == (body.hours_after_first_dose is None):
        raise HTTPException(400, "time: give the sample time or hours_after_first_dose (one of them)")
    name = resolve_drug(body.drug)

    def build(state: TwinState) -> tuple[list[Any], dict[str, Any]]:
        when = body.time
        if body.hours_after_first_dose is not None:
            first = state.first_dose_time(name)
            if first is None:
                raise PgxInputError(f"hours_after_first_dose: no dose of {name} is recorded for twin {patient_id}")
            when = first + timedelta(hours=body.hours_after_first_dose)
        assert when is not None
        observation = {"kind": "concentration", "drug": name, "time": when.isoformat(),
                       **body.model_dump(mode="json", include={"value", "unit", "blq", "lloq", "analyte"},
                                         exclude_none=True)}
        return [{"type": "observation_recorded", "observation": observation}], {}

    return _conditional_write(request, raw, principal, twins, service, patient_id, if_match, idempotency_key, build,
                              reestimate=name)


@router.post("/patients/{patient_id}/events", response_model=WriteResult, summary="Append raw twin events",
             responses=WRITE_RESPONSES)
def append_events(patient_id: PatientIdPath, body: EventsIn, request: Request, raw: Any = Depends(json_body),
                  principal: Principal = Depends(require("write")), twins: TwinStore = Depends(twin_store),
                  service: ServiceStore = Depends(service_store), if_match: str | None = IfMatch,
                  idempotency_key: str | None = IdempotencyKey) -> Response:
    """Any twin events (doses, regimen changes, stops, retractions, outside calls, labs, ...),
    checked together against the twin and appended in order, one version each."""
    return _conditional_write(request, raw, principal, twins, service, patient_id, if_match, idempotency_key,
                              lambda state: (list(body.events), {}))
