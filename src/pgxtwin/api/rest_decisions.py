"""Decisions over a twin (evaluate, recommend, the HTML report) and stateless simulation.

These read the twin (``?version=N`` for a past version, default the current one) and change
nothing; each is recorded in the audit log (``evaluate``, ``recommend``, ``report``, ``simulate``).
They compute (PK simulation, posterior draws), so they run in the thread pool.  Results are the
CLI's JSON (``pgxtwin twin evaluate --json``, ``twin recommend --json``, ``simulate --json``) with
non-finite numbers as null (an open-ended target window has ``high: null``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from ..knowledge.drugs import resolve_drug
from ..errors import PgxInputError
from ..store.repository import TwinStore
from ..twin import workflow
from ..twin.state import TwinState
from .auth import Principal, require
from .deps import twin_store
from .rest_common import NO_STORE, PatientIdPath, entry_point, error_responses, etag, json_response
from .schemas import EvaluateIn, EvaluationsOut, PrescriptionIn, RecommendationOut, SimulateIn, SimulationOut

router = APIRouter(tags=["decisions"])

Version = Query(None, ge=0, le=2**62, description="a past version of the twin (default: the current one)")


def _read(twins: TwinStore, principal: Principal, request: Request, patient_id: str, version: int | None) -> TwinState:
    principal.check("read", patient_id)
    return twins.state_at(patient_id, version, actor=principal.actor, entry_point=entry_point(request))


def _evaluate(state: TwinState, prescriptions: list[PrescriptionIn]) -> list[dict[str, Any]]:
    from ..knowledge.drugs import UnknownDrug
    from ..pk.scenarios import parse_every

    if prescriptions:
        todo = [(resolve_drug(p.drug), p.dose, parse_every(p.every)) for p in prescriptions]
    else:
        todo = workflow.current_regimens(state)
        if not todo:
            raise HTTPException(422, f"twin {state.patient_id} has no current medication with a regimen;"
                                     " give a drug and a dose")
    try:
        results = workflow.evaluations(state, todo)
    except (UnknownDrug, ValueError) as exc:
        raise PgxInputError(str(exc)) from None
    return [ev.as_dict() | {"notes": notes} for ev, notes, _ in results]


def _evaluation_response(twins: TwinStore, principal: Principal, request: Request, state: TwinState,
                         prescriptions: list[PrescriptionIn]) -> Response:
    evaluations = _evaluate(state, prescriptions)
    twins.audit(state.patient_id, "evaluate", actor=principal.actor, entry_point=entry_point(request),
                version=state.version, detail=", ".join(f"{e['drug']}: {e['verdict']}" for e in evaluations))
    body = {"patient_id": state.patient_id, "version": state.version, "evaluations": evaluations}
    return json_response(body, headers={"ETag": etag(state.version)})


@router.get("/patients/{patient_id}/evaluate", response_model=EvaluationsOut, summary="Evaluate prescriptions",
            responses=error_responses(404, 422))
def evaluate_get(patient_id: PatientIdPath, request: Request,
                 drug: str | None = Query(None, min_length=1, max_length=100, description="a new prescription's drug"),
                 dose: str | None = Query(None, min_length=1, max_length=50, description="its dose, e.g. '75 mg'"),
                 every: str = Query("24h", min_length=1, max_length=20, description="its interval, e.g. '12h'"),
                 version: int | None = Version, principal: Principal = Depends(require("read")),
                 twins: TwinStore = Depends(twin_store)) -> Response:
    """One verdict (ok, adjust_dose, avoid, insufficient_data) with reasons for the twin's current
    medications, or for a new prescription (``drug`` and ``dose``)."""
    if (drug is None) != (dose is None):
        raise HTTPException(400, "drug and dose: give both for a new prescription, or neither")
    prescriptions = [] if drug is None else [PrescriptionIn(drug=drug, dose=dose, every=every)]  # type: ignore[arg-type]
    state = _read(twins, principal, request, patient_id, version)
    return _evaluation_response(twins, principal, request, state, prescriptions)


@router.post("/patients/{patient_id}/evaluate", response_model=EvaluationsOut, summary="Evaluate prescriptions",
             responses=error_responses(404, 422))
def evaluate_post(patient_id: PatientIdPath, body: EvaluateIn, request: Request, version: int | None = Version,
                  principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """As the GET, for several prescriptions at once (none: the current medications); changes nothing."""
    state = _read(twins, principal, request, patient_id, version)
    return _evaluation_response(twins, principal, request, state, body.prescriptions)


@router.get("/patients/{patient_id}/recommend", response_model=RecommendationOut, summary="Recommend a regimen",
            responses=error_responses(404))
def recommend(patient_id: PatientIdPath, request: Request,
              drug: str = Query(min_length=1, max_length=100, description="drug name"), version: int | None = Version,
              principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """The regimen with the highest probability of target attainment for this patient (the
    individual posterior when the drug's levels are known, else the prior)."""
    name = resolve_drug(drug)
    state = _read(twins, principal, request, patient_id, version)
    try:
        choice, notes = workflow.recommend(state, name)
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    twins.audit(patient_id, "recommend", actor=principal.actor, entry_point=entry_point(request),
                version=state.version, detail=f"{name}: {choice.best.dose_mg:g} mg every {choice.best.interval_h:g} h")
    body = {"patient_id": patient_id, "version": state.version, "drug": name,
            "recommendation": choice.as_dict() | {"notes": notes}}
    return json_response(body, headers={"ETag": etag(state.version)})


@router.get("/patients/{patient_id}/report", summary="The twin's HTML report", response_class=HTMLResponse,
            responses={**error_responses(404), 200: {"content": {"text/html": {"schema": {"type": "string"}}},
                                                     "description": "one self-contained HTML document"}})
def report(patient_id: PatientIdPath, request: Request, version: int | None = Version,
           principal: Principal = Depends(require("read")), twins: TwinStore = Depends(twin_store)) -> Response:
    """Genotype, phenotypes, verdicts and concentration-time plots of the current medications, as
    ``pgxtwin report`` writes it."""
    from ..knowledge.version import knowledge_base_version
    from ..report.html import render_twin_report
    from ..report.twin import report_inputs

    state = _read(twins, principal, request, patient_id, version)
    evaluations, curves = report_inputs(state)
    html = render_twin_report(state, evaluations=evaluations, curves=curves, kb_version=knowledge_base_version())
    twins.audit(patient_id, "report", actor=principal.actor, entry_point=entry_point(request), version=state.version)
    return HTMLResponse(html, headers={**NO_STORE, "ETag": etag(state.version)})


@router.post("/simulate", response_model=SimulationOut, summary="Simulate a regimen", responses=error_responses())
def simulate(body: SimulateIn, request: Request, principal: Principal = Depends(require("read")),
             twins: TwinStore = Depends(twin_store)) -> Response:
    """A regimen in a typical patient (``n`` = 1) or a virtual population, for the patient described
    in the body (no twin is read or written)."""
    import numpy as np

    from ..pk.drug_model import GeneInput, PatientFactors, gene_inputs
    from ..pk.scenarios import parse_every, simulate_regimen

    name = resolve_drug(body.drug)
    p = body.patient
    try:
        genes = gene_inputs(p.genotype.genes) if p.genotype is not None else {}
        for gene, text in (p.phenotypes | p.diplotypes).items():
            genes[gene.strip().upper()] = GeneInput.from_text(gene.strip().upper(), text)
        patient = PatientFactors(weight_kg=p.weight_kg, height_cm=p.height_cm, age_years=p.age_years, sex=p.sex,
                                 crcl_ml_min=p.crcl_ml_min, genes=genes, comedications=tuple(p.comedications))
        times = None if body.times_h is None else np.asarray(body.times_h, dtype=float)
        sim = simulate_regimen(name, patient, dose=body.dose, every_h=parse_every(body.every), days=body.days,
                               n=body.n, seed=body.seed, times_h=times)
    except KeyError as exc:  # a gene the knowledge base does not know
        raise PgxInputError(f"patient: unknown gene {exc}") from None
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    twins.audit(None, "simulate", actor=principal.actor, entry_point=entry_point(request),
                detail=f"{name} n={body.n} days={body.days:g}")
    return json_response(sim.summary())
