"""FHIR R4 endpoints: Bundle import into a twin, Genomics Reporting export of a twin.

* ``POST /fhir/Bundle``: import (scope ``*.write``); 201 when the import created the twin, else 200,
  with an OperationOutcome: the counts, then what was skipped and why (``warning`` one by one,
  ``information`` grouped).  A Bundle naming no patient imports nothing: 200 with a warning.
  Not JSON, not a Bundle, two patients, a Patient id that is not a FHIR id: 400 OperationOutcome.
* ``GET /fhir/Patient/{id}/$pgx-export``: the export Bundle (scope ``*.read``).  (No
  ``GET /fhir/Bundle?patient=`` alias: a second method on ``/fhir/Bundle`` would make Starlette's
  405 ``Allow`` header name only one of them.)

Every import and export is audited with the token's actor (the store's own read/append entries
included); a token for another patient is refused (403) and that refusal is audited too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ...store.errors import UnknownTwinError
from ...store.repository import TwinStore
from ...twin.state import FHIR_ID_PATTERN
from ..auth import Action, Principal, require
from ..deps import twin_store
from ..problems import operation_outcome
from .bundle_import import NoPatientError, import_document
from .export import export_bundle

FHIR_JSON = "application/fhir+json"
ENTRY_POINT = "fhir"


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


router = APIRouter(prefix="/fhir", tags=["FHIR R4"], default_response_class=FhirResponse)


class OperationOutcome(BaseModel):
    """FHIR R4 OperationOutcome (only the elements this service writes are described)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["OperationOutcome"]
    issue: list[dict[str, Any]]


class Bundle(BaseModel):
    """FHIR R4 Bundle (only the top-level elements are described)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: str
    entry: list[dict[str, Any]] = []


class BundleIn(BaseModel):
    """A FHIR R4 Bundle to import: its entries are read leniently (what cannot be read is reported)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    entry: list[dict[str, Any]] = []


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OperationOutcome, "description": why}
    for status, why in (
        (400, "not JSON, not a FHIR Bundle, or several patients"), (401, "no valid bearer token"),
        (403, "the token's scopes do not cover this patient"), (409, "a twin for this patient was created meanwhile"),
        (412, "another write came first"), (413, "body too large"), (429, "too many requests"),
        (503, "the twin store is unavailable"),
    )
}


def _check(store: TwinStore, principal: Principal, action: Action, patient_id: str, what: str) -> None:
    """403 unless the token covers this patient; the refusal is audited."""
    try:
        principal.check(action, patient_id)
    except HTTPException:
        store.audit(patient_id, what, actor=principal.actor, entry_point=ENTRY_POINT, outcome="forbidden")
        raise


@router.post(
    "/Bundle",
    summary="Import a FHIR R4 Bundle into the patient's twin",
    response_model=OperationOutcome,
    responses={200: {"description": "imported into an existing twin (or nothing: no patient named)"},
               201: {"model": OperationOutcome, "description": "imported into a twin created for it"}} | _ERRORS,
)
def post_bundle(
    document: Annotated[BundleIn, Body(media_type=FHIR_JSON)],
    principal: Annotated[Principal, Depends(require("write"))],
    store: Annotated[TwinStore, Depends(twin_store)],
) -> FhirResponse:
    """Patient (Patient.id, else the one patient the subjects name), weight, height, creatinine,
    eGFR, drug levels, medications, genotypes and therapeutic implications become twin events;
    facts already in the twin are not added again."""
    try:
        report = import_document(store, document.model_dump(), actor=principal.actor, entry_point=ENTRY_POINT,
                                 require_bundle=True,
                                 authorize=lambda pid: _check(store, principal, "write", pid, "fhir_import"))
    except NoPatientError as exc:
        return FhirResponse(operation_outcome(200, f"nothing imported: {exc}", code="not-found", severity="warning"))
    return FhirResponse(report.operation_outcome(), status_code=201 if report.created else 200)


PatientPath = Annotated[str, Path(pattern=FHIR_ID_PATTERN, description="FHIR Patient id (the twin's patient_id)")]


@router.get(
    "/Patient/{patient_id}/$pgx-export",
    summary="The twin's PGx results as Genomics Reporting IG resources",
    response_model=Bundle,
    responses={404: {"model": OperationOutcome, "description": "no twin for this patient"}} | _ERRORS,
)
def patient_export(
    patient_id: PatientPath,
    principal: Annotated[Principal, Depends(require("read"))],
    store: Annotated[TwinStore, Depends(twin_store)],
) -> FhirResponse:
    """Genotype Observations, therapeutic implications and medication recommendation Tasks in a
    ``collection`` Bundle."""
    _check(store, principal, "read", patient_id, "fhir_export")
    try:
        state = store.state_at(patient_id, actor=principal.actor, entry_point=ENTRY_POINT)
    except UnknownTwinError:
        store.audit(patient_id, "fhir_export", actor=principal.actor, entry_point=ENTRY_POINT, outcome="unknown_twin")
        raise
    bundle = export_bundle(state)
    store.audit(patient_id, "fhir_export", actor=principal.actor, entry_point=ENTRY_POINT, version=state.version,
                detail=f"{len(bundle['entry'])} resources")
    return FhirResponse(bundle)
