"""The CDS services pgxtwin offers and what one call does.

``pgx-order-select`` / ``pgx-order-sign`` check the draft medication orders against the patient's
twin; ``pgx-patient-view`` summarises the actionable pharmacogenomic results of the chart.

One call: check the hook context; (orders) find the draft drugs with pharmacogenomic knowledge
(none: no card, no data needed); read the twin of ``context.patientId`` (an audited read) or,
without a twin, the EHR's data from prefetch or the FHIR server (412 when it cannot be had); the
twin's cached assessment per drug; the cards, each recorded with its rule for feedback (the audit
entry and the card records are committed together with the claim of the client's token, with
group commit: :mod:`pgxtwin.store.recorder`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import HTTPException
from pydantic import BaseModel, ValidationError

from ...knowledge.drugs import drug_names
from ...knowledge.guidelines import guidelines_for
from ...store.errors import UnknownTwinError
from .assess import AssessmentCache, Subject, assess_drug, chart_findings
from .cards import RuledCard, chart_card, order_cards
from .drafts import DraftMedication, draft_medications
from .ehr import ehr_subject
from .models import CdsRequest, OrderSelectContext, OrderSignContext, PatientContext
from .prefetch import TEMPLATES, DataUnavailable, gather
from ...store.recorder import Recorder
from .security import CdsClient, replayed

__all__ = ["SERVICES", "Service", "call", "service_for"]

ORDER_KEYS = ("patient", "weight", "height", "creatinine", "medications", "pgx")


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    context: type[BaseModel]
    prefetch: tuple[str, ...]

    def definition(self) -> dict[str, Any]:
        return {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id,
                "prefetch": {k: TEMPLATES[k] for k in self.prefetch},
                "usageRequirements": "Patients with a pgxtwin twin are assessed from the twin; for others the "
                                     "prefetch data (or the FHIR server through fhirAuthorization) are used."}


_ORDER_CHECK = ("Checks the medications being ordered against the patient's pharmacogenomic digital twin: "
                "CPIC guidance for the genotype and the predicted exposure at the ordered dose, with a "
                "model-based regimen or an alternative drug when the twin advises a change.")
SERVICES: dict[str, Service] = {s.id: s for s in (
    Service("pgx-order-select", "order-select", "Pharmacogenomic prescription check (order select)", _ORDER_CHECK,
            OrderSelectContext, ORDER_KEYS),
    Service("pgx-order-sign", "order-sign", "Pharmacogenomic prescription check (order sign)", _ORDER_CHECK,
            OrderSignContext, ORDER_KEYS),
    Service("pgx-patient-view", "patient-view", "Pharmacogenomic results summary",
            "Summarises the patient's actionable pharmacogenomic results and the drugs whose CPIC guidance they "
            "change, highlighting current medications.", PatientContext, ("patient", "medications", "pgx")),
)}


def _context(service: Service, body: CdsRequest) -> Any:
    if body.hook != service.hook:
        raise HTTPException(400, f"hook {body.hook!r} is not this service's hook ({service.hook})")
    try:
        return service.context.model_validate(body.context)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise HTTPException(400, f"context{'.' + where if where else ''}: {message}") from None


def _subject(service: Service, body: CdsRequest, patient_id: str, client: CdsClient, recorder: Recorder,
             fhir: httpx.Client) -> tuple[Subject, str, dict[str, Any] | None]:
    """The patient's twin (an audited read: the audit row to commit is returned), else EHR data
    (prefetch or FHIR server); and a provenance line for the cards."""
    try:
        state, audit = recorder.read_twin(patient_id, actor=client.actor, entry_point=f"cds:{service.id}")
    except UnknownTwinError:
        pass
    else:
        meds = tuple(sorted({m.drug for m in state.current_medications}))
        return (Subject(state, f"twin:{state.version}", meds),
                f"pgxtwin twin of patient {patient_id}, version {state.version}", audit)
    token = body.fhirAuthorization.access_token if body.fhirAuthorization is not None else None
    try:
        data = gather(service.prefetch, ("pgx",), patient_id=patient_id, context=body.context, prefetch=body.prefetch,
                      fhir_server=body.fhirServer, access_token=token, client=fhir)
    except DataUnavailable as exc:
        raise HTTPException(412, f"no twin for this patient and {exc}") from None
    digest = hashlib.sha256(json.dumps(data.resources, sort_keys=True, default=str).encode()).hexdigest()
    state, meds = ehr_subject(patient_id, data.resources)
    source = "FHIR server" if "fetched" in data.origin.values() else "prefetch"
    return (Subject(state, f"ehr:{digest}", meds),
            f"no twin for patient {patient_id}: EHR data from the {source}"
            + ("" if data.has_pgx else " (no pharmacogenomic results)"), None)


def _pgx_drug(drug: str) -> bool:
    """Whether the twin has something to check: a CPIC guideline or a drug-library model."""
    return bool(guidelines_for(drug)) or drug in drug_names()


def _alternatives(cache: AssessmentCache, patient_id: str, subject: Subject, names: list[str]) -> list[str]:
    """The guideline's alternatives that the twin does not advise against for this patient."""
    keep = []
    for name in names:
        if not _pgx_drug(name) or assess_drug(cache, patient_id, subject, name, None, None).evaluation.verdict != "avoid":
            keep.append(name)
    return keep


def _order_cards(cache: AssessmentCache, patient_id: str, subject: Subject, provenance: str,
                 orders: list[tuple[DraftMedication, str]]) -> list[RuledCard]:
    cards: list[RuledCard] = []
    for order, drug in orders:
        assessment = assess_drug(cache, patient_id, subject, drug, order.dose_mg, order.interval_h)
        alternatives = _alternatives(cache, patient_id, subject, assessment.evaluation.alternatives)
        cards += order_cards(order, drug, assessment, patient_id, provenance, alternatives)
    return cards


def service_for(service_id: str) -> Service:
    """The service of this id; 404 when there is none."""
    service = SERVICES.get(service_id)
    if service is None:
        raise HTTPException(404, f"no CDS service {service_id!r} (see GET /cds-services)")
    return service


def _cards(service: Service, body: CdsRequest, client: CdsClient, recorder: Recorder, cache: AssessmentCache,
           fhir: httpx.Client) -> tuple[str, list[RuledCard], dict[str, Any] | None]:
    """(patient id, the cards with their rules, the audit row of the twin read still to record)."""
    context = _context(service, body)
    patient_id = context.patientId
    if service.hook == "patient-view":
        subject, provenance, audit = _subject(service, body, patient_id, client, recorder, fhir)
        card = chart_card(chart_findings(cache, patient_id, subject), subject.medications, provenance)
        return patient_id, [] if card is None else [card], audit
    selections = context.selections if isinstance(context, OrderSelectContext) else None
    orders = [(o, d) for o in draft_medications(context.draftOrders, selections) for d in o.drugs if _pgx_drug(d)]
    if not orders:
        return patient_id, [], None  # nothing pharmacogenomic is being ordered: no data needed, nothing to say
    subject, provenance, audit = _subject(service, body, patient_id, client, recorder, fhir)
    return patient_id, _order_cards(cache, patient_id, subject, provenance, orders), audit


def call(service_id: str, body: CdsRequest, client: CdsClient, *, recorder: Recorder, cache: AssessmentCache,
         fhir: httpx.Client) -> list[dict[str, Any]]:
    """The cards of one call of the service ``service_id`` (``fhir``: the application's client for
    the EHR's FHIR server, when prefetch is missing).  The claim of the client's token, the twin read's audit entry
    and each card's rule are committed together before it returns; a lost claim (the token was
    used before, by another service process) is a 401 and no card.  A call that fails (412, a bad
    context, ...) claims the token too before answering."""
    try:
        service = service_for(service_id)
        patient_id, ruled, audit = _cards(service, body, client, recorder, cache, fhir)
    except Exception:
        if not recorder.record(None, [], client.claim):
            raise replayed() from None
        raise
    cards = [dict(item.card, uuid=str(uuid.uuid4())) for item in ruled]
    if not recorder.record(audit, [(c["uuid"], service.id, item.rule, patient_id) for c, item in zip(cards, ruled)],
                           client.claim):
        raise replayed()
    return cards
