"""Every CDS Hooks example request (spec 2.0.1, hook library, derived full requests) gets a
well-formed answer: 200 with cards valid per the specification, or a specification-conformant 4xx;
never a 5xx.  Malformed input is a 4xx with an error body; the draft-order reader never fails."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pgxtwin.api.cds.drafts import draft_medications, read_order
from pgxtwin.api.fhir.medication import normalise_dosage
from pgxtwin.api.cds.models import CdsResponse

from .conftest import SHARED, Service, _free_port
from .test_cds_services import cards_of, make_twin

CDS = SHARED / "fixtures" / "cds-hooks"
HOOK_OF = {"order-select": "pgx-order-select", "order-sign": "pgx-order-sign", "patient-view": "pgx-patient-view"}


def _requests() -> list[tuple[str, dict[str, Any]]]:
    """(name, request body) of every example: full requests as they are, bare contexts wrapped."""
    if not CDS.exists():
        return []
    out = []
    for path in sorted([*CDS.glob("spec-2.0.1/request-*.json"), *CDS.glob("derived/request-*.json")]):
        out.append((path.name, json.loads(path.read_text())))
    for path in sorted([*CDS.glob("hooks-library/*.json"), *CDS.glob("spec-2.0.1/context-*.json")]):
        hook = next((h for h in HOOK_OF if path.name.startswith(h)), "order-sign")
        context = json.loads(path.read_text())["context"]
        out.append((path.name, {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}))
    return out


REQUESTS = _requests()
pytestmark = pytest.mark.skipif(not REQUESTS, reason="../shared fixtures absent")


CLOSED = f"http://127.0.0.1:{_free_port()}/fhir"  # nothing listens: tests never go on the internet


def _post(client: httpx.Client, service: Service, body: dict[str, Any]) -> httpx.Response:
    """POST an example; its public fhirServer (e.g. hooks.smarthealthit.org) becomes a closed local port."""
    service_id = HOOK_OF[body["hook"]]
    if "fhirServer" in body:
        body = body | {"fhirServer": CLOSED}
    return client.post(f"/cds-services/{service_id}", json=body, headers=service.cds_headers(service_id))


def _expected(name: str, body: dict[str, Any], twin: bool) -> int:
    context = body["context"]
    if "patientId" not in context or (body["hook"] == "order-select" and "selections" not in context):
        return 400  # not a complete hook context (spec fragments)
    if body["hook"] == "patient-view" and not twin:
        return 412  # no twin, no genotype prefetch, and the fhirServer cannot be reached
    return 200


def test_every_example_request_gets_a_well_formed_answer(client: httpx.Client, service: Service) -> None:
    seen: dict[str, int] = {}
    for twin in (False, True):
        if twin:  # the examples' patient, now with a twin: CYP2C19 poor metabolizer
            make_twin(service, "1288992", {"CYP2C19": "*2/*2"})
        for name, body in REQUESTS:
            response = _post(client, service, body)
            assert response.status_code == _expected(name, body, twin), (name, response.text)
            seen[name] = response.status_code
            if response.status_code == 200:
                cards = cards_of(response)
                # the examples order amoxicillin/clavulanate: nothing pharmacogenomic to say
                assert body["hook"] == "patient-view" or cards == []
            else:
                assert set(response.json()) == {"error"}
    assert len(seen) == len(REQUESTS) >= 14
    # patient-view with a twin: one summary card
    pv = next(b for n, b in REQUESTS if n == "request-patient-view.json")
    [card] = cards_of(_post(client, service, pv))
    assert "CYP2C19 Poor Metabolizer" in card["summary"]


def test_hook_library_defects_are_read_leniently() -> None:
    """doseAndRate as an object (order-select R4), doseQuantity outside doseAndRate (order-sign R4),
    DSTU2 MedicationOrder: the amoxicillin order is read with its 12-hourly interval every time."""
    for name in ("order-select-context-r4.json", "order-sign-context-r4.json", "order-sign-context-dstu2.json",
                 "order-sign-context-stu3.json"):
        context = json.loads((CDS / "hooks-library" / name).read_text())["context"]
        [order] = draft_medications(context["draftOrders"])
        assert order.interval_h == 12.0 and order.drugs == () and "Amoxicillin" in order.label, name
    dosage = json.loads((CDS / "hooks-library" / "order-select-context-r4.json").read_text())[
        "context"]["draftOrders"]["entry"][1]["resource"]["dosageInstruction"][0]
    assert normalise_dosage(dosage)["doseAndRate"] == [dosage["doseAndRate"]]
    stu3 = json.loads((CDS / "hooks-library" / "order-sign-context-r4.json").read_text())[
        "context"]["draftOrders"]["entry"][1]["resource"]["dosageInstruction"][0]
    normal = normalise_dosage(stu3)
    assert "doseQuantity" not in normal and normal["doseAndRate"][0]["doseQuantity"]["value"] == 5


def test_the_card_schema_accepts_the_spec_examples_and_rejects_the_invalid_demo() -> None:
    for name in ("response-cards.json", "response-empty.json"):
        CdsResponse.model_validate(json.loads((CDS / "spec-2.0.1" / name).read_text()))
    with pytest.raises(ValidationError) as info:
        CdsResponse.model_validate(json.loads((CDS / "sandbox" / "INVALID-card-demo-example.json").read_text()))
    text = str(info.value)
    assert "actions.0.type" in text and "'modify'" in text  # allowed: create, update, delete
    assert "actions.1.resource" in text  # the deprecated id string on delete
    # and the demo's missing selectionBehavior alone is refused too
    demo = json.loads((CDS / "sandbox" / "INVALID-card-demo-example.json").read_text())["cards"][0]
    demo["suggestions"] = [{"label": "Add", "actions": [{"type": "create", "description": "Add XYZ", "resource": {}}]}]
    with pytest.raises(ValidationError, match="selectionBehavior is required"):
        CdsResponse.model_validate({"cards": [demo]})


@pytest.mark.parametrize(("content", "why"), [
    (b"{not json", "JSON"),
    (b"[]", "body"),
    (b'{"hook": "order-sign"}', "hookInstance"),
    (b'{"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p"}}', "draftOrders"),
    (b'{"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p", "draftOrders": {"resourceType": "List"}}}',
     "Bundle"),
    (b'{"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "../etc", "draftOrders": {}}}', "patientId"),
    (b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"}}', "hook"),
    (b'{"hook": "order-sign", "hookInstance": "x", "fhirAuthorization": {"access_token": "t"},'
     b' "context": {"patientId": "p", "draftOrders": {"resourceType": "Bundle"}}}', "fhirServer"),
])
def test_malformed_requests_are_400(client: httpx.Client, service: Service, content: bytes, why: str) -> None:
    response = client.post("/cds-services/pgx-order-sign", content=content,
                           headers={**service.cds_headers("pgx-order-sign"), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and why.lower() in response.json()["error"].lower()


def test_unknown_service_is_404(client: httpx.Client, service: Service) -> None:
    body = {"hook": "order-sign", "hookInstance": "x", "context": {}}
    response = client.post("/cds-services/no-such-service", json=body, headers=service.cds_headers("no-such-service"))
    assert response.status_code == 404 and "no-such-service" in response.json()["error"]


# --- property tests: the draft-order reader never raises, whatever JSON it is given

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_order_like = st.fixed_dictionaries({"resourceType": st.sampled_from(["MedicationRequest", "MedicationOrder"])}, optional={
    "id": _json | st.text(max_size=10),
    "medicationCodeableConcept": _json | st.fixed_dictionaries({}, optional={
        "coding": st.lists(st.fixed_dictionaries({}, optional={
            "system": st.just("http://www.nlm.nih.gov/research/umls/rxnorm") | _json,
            "code": st.sampled_from(["32968", "2556", "617993", "190521"]) | _json,
            "display": st.sampled_from(["Clopidogrel 75 MG Oral Tablet", "warfarin sodium 5 MG", "x 1 MG/ML"]) | _json,
        }), max_size=3),
        "text": _json}),
    "dosageInstruction": _json | st.lists(st.fixed_dictionaries({}, optional={
        "doseAndRate": _json | st.fixed_dictionaries({}, optional={"doseQuantity": _json}),
        "doseQuantity": _json | st.fixed_dictionaries({}, optional={"value": _json, "unit": _json, "code": _json}),
        "timing": _json | st.fixed_dictionaries({}, optional={
            "repeat": _json | st.fixed_dictionaries({}, optional={"period": _json, "periodUnit": _json, "periodUnits": _json,
                                                                 "frequency": _json}),
            "code": _json | st.fixed_dictionaries({}, optional={"coding": st.lists(_json, max_size=2)})}),
        "text": _json,
    }), max_size=2),
})


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(order=_order_like)
def test_read_order_never_raises(order: dict[str, Any]) -> None:
    read = read_order(order)
    assert read is not None
    assert read.dose_mg is None or read.dose_mg >= 0
    assert read.interval_h is None or read.interval_h > 0


# what can travel as JSON (no NaN or infinities)
_wire = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_resource_like = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Bundle", "Patient", "Observation", "OperationOutcome", "MedicationRequest"])},
    optional={"entry": _wire, "id": _wire, "subject": _wire, "code": _wire, "valueQuantity": _wire, "status": _wire})
_prefetch = st.dictionaries(st.sampled_from(["patient", "pgx", "weight", "creatinine", "medications", "other"]),
                            _wire | _resource_like, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(prefetch=_prefetch, dose=_wire)
def test_any_prefetch_or_dose_is_answered_without_a_server_error(client: httpx.Client, service: Service,
                                                                 prefetch: dict[str, Any], dose: Any) -> None:
    order = {"resourceType": "MedicationRequest", "id": "d", "medicationCodeableConcept": {"text": "clopidogrel"},
             "dosageInstruction": [{"doseAndRate": [{"doseQuantity": dose}]}]}
    body = {"hook": "order-sign", "hookInstance": "h", "prefetch": prefetch,
            "context": {"patientId": "fuzzed-patient", "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]}}}
    response = client.post("/cds-services/pgx-order-sign", json=body, headers=service.cds_headers("pgx-order-sign"))
    assert response.status_code in (200, 400, 412), response.text
    if response.status_code == 200:
        CdsResponse.model_validate(response.json())


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(bundle=_json, dosage=_json)
def test_bundle_and_dosage_readers_never_raise(bundle: Any, dosage: Any) -> None:
    if isinstance(bundle, dict):
        draft_medications(bundle)
    assert isinstance(normalise_dosage(dosage), dict)



# --- draft orders: drugs by code and name, doses in mg, intervals in h

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.mark.parametrize(("concept", "drugs"), [
    ({"coding": [{"system": RX, "code": "32968"}]}, ("clopidogrel",)),          # library ingredient CUI
    ({"coding": [{"system": RX, "code": "190521"}]}, ("abacavir",)),            # CPIC table ingredient CUI
    ({"coding": [{"system": RX, "code": "309362", "display": "Clopidogrel 75 MG Oral Tablet"}]}, ("clopidogrel",)),
    ({"text": "clopidogrel 75 MG Oral Tablet [Plavix]"}, ("clopidogrel",)),
    ({"text": "Plavix 75mg"}, ("clopidogrel",)),                                 # brand: library synonym
    ({"text": "Warfarin Sodium 5 MG Oral Tablet"}, ("warfarin",)),               # salt
    ({"text": "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet"}, ("metoprolol",)),
    ({"text": "abacavir sulfate 300 MG Oral Tablet"}, ("abacavir",)),
    ({"text": "valproic acid 250 MG Oral Capsule"}, ("valproic acid",)),        # two-word CPIC name
    ({"text": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension"}, ()),
    ({"coding": [{"system": "http://snomed.info/sct", "code": "32968"}], "text": "tablet"}, ()),  # not RxNorm
])
def test_drugs_are_recognised_by_code_and_name(concept: dict[str, Any], drugs: tuple[str, ...]) -> None:
    order = read_order({"resourceType": "MedicationRequest", "medicationCodeableConcept": concept})
    assert order is not None and order.drugs == drugs


@pytest.mark.parametrize(("display", "dosage", "dose_mg", "interval_h"), [
    ("Clopidogrel 75 MG Oral Tablet", {"doseAndRate": [{"doseQuantity": {"value": 4, "unit": "tablet"}}],
                                       "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}, 300.0, 24.0),
    ("clopidogrel", {"doseAndRate": {"doseQuantity": {"value": 0.075, "unit": "g"}},
                     "timing": {"code": {"coding": [{"code": "BID"}]}}}, 75.0, 12.0),
    ("citalopram 2 MG/ML Oral Solution", {"doseQuantity": {"value": 10, "unit": "mL"},
                                          "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnits": "d"}}}, 20.0, 8.0),
    ("citalopram", {"text": "20 mg once daily"}, 20.0, None),
    ("citalopram", {"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],   # no strength known
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "s"}}}, None, None),
])
def test_doses_and_intervals(display: str, dosage: dict[str, Any], dose_mg: float | None,
                             interval_h: float | None) -> None:
    order = read_order({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": display},
                        "dosageInstruction": [dosage]})
    assert order is not None
    assert order.dose_mg == (pytest.approx(dose_mg) if dose_mg is not None else None)
    assert order.interval_h == (pytest.approx(interval_h) if interval_h is not None else None)
