"""CDS Hooks 2.0 endpoints: discovery, the services, and feedback.

Every call carries a CDS client JWT (:mod:`.security`); errors are ``{"error": ...}`` bodies
(:mod:`pgxtwin.api.problems`), never a card.  Endpoints touching the store are plain ``def``
(FastAPI runs them in its thread pool).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ...store.service import ServiceStore
from ..deps import service_store
from .assess import AssessmentCache
from .models import CdsError, CdsRequest, CdsResponse, Discovery, Feedback, FeedbackReceipt
from ...store.recorder import Recorder
from .security import CdsClient, cds_client, verified_cds_client
from .services import SERVICES, call, service_for

router = APIRouter(prefix="/cds-services", tags=["CDS Hooks"])

_AUTH = {401: {"model": CdsError, "description": "no valid CDS client JWT"}}
_LIMITS = {413: {"model": CdsError, "description": "request body too large"},
           429: {"model": CdsError, "description": "rate limit exceeded"}}
_CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": CdsError, "description": "malformed request or hook context"},
    404: {"model": CdsError, "description": "no such CDS service"},
    412: {"model": CdsError, "description": "no twin, and the data needed could be had neither from prefetch "
                                           "nor from the FHIR server"},
    503: {"model": CdsError, "description": "the twin store is unavailable"},
    **_AUTH, **_LIMITS,
}
_runtime_lock = threading.Lock()


@dataclass(frozen=True)
class _Runtime:
    """Per application: the cache of twin assessments and the recorder of twin reads and cards."""

    cache: AssessmentCache
    recorder: Recorder


def _runtime(request: Request) -> _Runtime:
    state = request.app.state
    runtime = getattr(state, "cds_runtime", None)
    if runtime is None:
        with _runtime_lock:
            runtime = getattr(state, "cds_runtime", None)
            if runtime is None:
                runtime = state.cds_runtime = _Runtime(AssessmentCache(), Recorder(state.twins))
    return runtime


@router.get("", response_model=Discovery, response_model_exclude_none=True, responses={**_AUTH, **_LIMITS},
            summary="CDS Hooks discovery: the services and their prefetch templates")
def discovery(client: CdsClient = Depends(cds_client)) -> dict[str, Any]:
    return {"services": [s.definition() for s in SERVICES.values()]}


@router.post("/{service_id}", response_model=CdsResponse, response_model_exclude_none=True,
             responses=_CALL_ERRORS, summary="Call a CDS service: cards for this hook")
def call_service(service_id: str, body: CdsRequest, request: Request,
                 client: CdsClient = Depends(verified_cds_client)) -> Response:
    runtime = _runtime(request)
    cards = call(service_id, body, client, recorder=runtime.recorder, cache=runtime.cache,
                 fhir=request.app.state.fhir_client)
    # checked against the response model and encoded here, in this thread: for a plain def endpoint
    # FastAPI would do both in another thread-pool round trip
    encoded = CdsResponse.model_validate({"cards": cards}).model_dump_json(exclude_none=True)
    return Response(encoded, media_type="application/json")


@router.post("/{service_id}/feedback", response_model=FeedbackReceipt,
             responses={k: v for k, v in _CALL_ERRORS.items() if k != 412},
             summary="Feedback on cards: accepted or overridden (stored once per item)")
def feedback(service_id: str, body: Feedback, client: CdsClient = Depends(cds_client),
             store: ServiceStore = Depends(service_store)) -> dict[str, int]:
    service = service_for(service_id)
    stored = 0
    for item in body.feedback:
        reason = item.overrideReason.model_dump(exclude_none=True) if item.overrideReason is not None else None
        accepted = [s.model_dump() for s in item.acceptedSuggestions] if item.acceptedSuggestions else None
        stored += store.record_feedback(service_id=service.id, card_uuid=item.card, outcome=item.outcome,
                                        outcome_at=item.outcomeTimestamp, client=client.actor,
                                        accepted_suggestions=accepted, override_reason=reason)
    return {"stored": stored, "duplicates": len(body.feedback) - stored}
