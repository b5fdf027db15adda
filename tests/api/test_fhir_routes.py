"""The FHIR endpoints on a real uvicorn server: import, export, scopes, bad input, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import OAUTH_ISS, Service
from .fhir_validator import collection, fixture_files, load

FHIR_JSON = "application/fhir+json"
PID = "route-pat-1"
ACTOR = f"{OAUTH_ISS}|clinician-1"


def small_bundle(patient_id: str = PID) -> dict[str, Any]:
    subject = {"reference": f"Patient/{patient_id}"}
    return collection(
        {"resourceType": "Patient", "id": patient_id, "gender": "male", "birthDate": "1960-01-01"},
        {"resourceType": "Observation", "id": f"{patient_id}-w", "status": "final", "subject": subject,
         "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "effectiveDateTime": "2025-03-01",
         "valueQuantity": {"value": 80, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}},
        {"resourceType": "Observation", "id": f"{patient_id}-g", "status": "final", "subject": subject,
         "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
         "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                        "valueCodeableConcept": {"coding": [{"code": "HGNC:2621", "display": "CYP2C19"}]}}],
         "valueCodeableConcept": {"text": "CYP2C19 *2/*2"}},
        {"resourceType": "Encounter", "id": f"{patient_id}-e", "status": "finished"},
    )


def post(client: httpx.Client, service: Service, body: Any, **auth: Any) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/fhir/Bundle", content=content,
                       headers={"Content-Type": FHIR_JSON} | service.auth(**auth))


def test_import_creates_then_reimport_adds_nothing_then_export(client: httpx.Client, service: Service) -> None:
    first = post(client, service, small_bundle())
    assert first.status_code == 201 and first.headers["content-type"].startswith(FHIR_JSON)
    outcome = first.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"].startswith(f"twin {PID} (twin created): imported 3 facts")
    assert any("Encounter resources are not read" in i["diagnostics"] for i in outcome["issue"])

    again = post(client, service, small_bundle())
    assert again.status_code == 200 and "imported 0 facts" in again.json()["issue"][0]["diagnostics"]

    export = client.get(f"/fhir/Patient/{PID}/$pgx-export", headers=service.auth("user/*.read"))
    assert export.status_code == 200 and export.headers["content-type"].startswith(FHIR_JSON)
    bundle = export.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert {"pgx-genotype-CYP2C19", "pgx-implication-clopidogrel-CYP2C19", "pgx-recommendation-clopidogrel"} <= ids

    again = client.get(f"/fhir/Patient/{PID}/$pgx-export", headers=service.auth("user/*.read"))
    assert [e["fullUrl"] for e in again.json()["entry"]] == [e["fullUrl"] for e in bundle["entry"]]

    actions = [(a.action, a.actor, a.entry_point, a.outcome) for a in service.app.state.twins.audit_log(PID)]
    assert ("fhir_import", ACTOR, "fhir", "ok") in actions
    assert ("fhir_export", ACTOR, "fhir", "ok") in actions
    assert ("append:outside_call_set", ACTOR, "fhir", "ok") in actions
    assert ("read_state", ACTOR, "fhir", "ok") in actions


@pytest.mark.parametrize("body, message", [
    ("{not json", "JSON"),
    ("[1, 2]", "body"),
    (json.dumps({"resourceType": "Patient", "id": "p"}), "resourceType: Input should be 'Bundle'"),
    (json.dumps({"hello": "world"}), "resourceType: Field required"),
    (json.dumps({"resourceType": "Bundle", "entry": "x"}), "entry: Input should be a valid list"),
    (json.dumps(collection({"resourceType": "Patient", "id": "a"}, {"resourceType": "Patient", "id": "b"})), "2 patients"),
    (json.dumps(collection({"resourceType": "Patient", "id": "bad id!"})), "is not a FHIR id"),
])
def test_bad_documents_are_400_operation_outcomes(client: httpx.Client, service: Service, body: str, message: str) -> None:
    response = post(client, service, body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert message in outcome["issue"][0]["diagnostics"]


def test_bundle_naming_no_patient_imports_nothing(client: httpx.Client, service: Service) -> None:
    response = post(client, service, collection({"resourceType": "Organization", "id": "o"}))
    assert response.status_code == 200
    issue = response.json()["issue"][0]
    assert issue["severity"] == "warning" and issue["diagnostics"].startswith("nothing imported: no patient")


def test_scopes(client: httpx.Client, service: Service) -> None:
    assert client.post("/fhir/Bundle", json=small_bundle("route-pat-2")).status_code == 401
    assert post(client, service, small_bundle("route-pat-2"), scopes="user/*.read").status_code == 403
    other = post(client, service, small_bundle("route-pat-2"), scopes="patient/*.write", patient="someone-else")
    assert other.status_code == 403 and other.json()["resourceType"] == "OperationOutcome"
    audit = service.app.state.twins.audit_log("route-pat-2")
    assert [(a.action, a.outcome) for a in audit] == [("fhir_import", "forbidden")]
    assert service.app.state.twins.patients().count("route-pat-2") == 0
    own = post(client, service, small_bundle("route-pat-2"), scopes="patient/*.write", patient="route-pat-2")
    assert own.status_code == 201
    assert client.get("/fhir/Patient/route-pat-2/$pgx-export",
                      headers=service.auth("patient/*.read", patient="someone-else")).status_code == 403
    assert client.get("/fhir/Patient/route-pat-2/$pgx-export",
                      headers=service.auth("patient/*.read", patient="route-pat-2")).status_code == 200
    assert client.get("/fhir/Patient/route-pat-2/$pgx-export",
                      headers=service.auth("user/*.write")).status_code == 403


def test_unknown_patient_and_bad_ids(client: httpx.Client, service: Service) -> None:
    missing = client.get("/fhir/Patient/nobody/$pgx-export", headers=service.auth())
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert [(a.action, a.outcome) for a in service.app.state.twins.audit_log("nobody")] == [("fhir_export", "unknown_twin")]
    bad = client.get("/fhir/Patient/bad%20id!/$pgx-export", headers=service.auth())
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_every_shared_example_posts_without_a_server_error(client: httpx.Client, service: Service) -> None:
    if not fixture_files():
        pytest.skip("../shared/fixtures/fhir is absent")
    for path in fixture_files():
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        body = document if document["resourceType"] == "Bundle" else collection(document)
        response = post(client, service, body)
        assert response.status_code in (200, 201), (path.name, response.text[:500])
        issues = response.json()["issue"]
        assert issues[0]["severity"] == "information" and "twin " in issues[0]["diagnostics"], path.name
        assert {i["severity"] for i in issues} <= {"information", "warning"}, path.name


def test_synthea_export_validates_structure(client: httpx.Client, service: Service) -> None:
    bundle = load("synthea-r4/Cameron_Greenfelder_9b55212c-8024-4b8b-bc82-fa605435f63b.json")
    assert post(client, service, bundle).status_code in (200, 201)
    export = client.get("/fhir/Patient/c4cbfddf-6f87-4acd-a34b-670178c3e535/$pgx-export", headers=service.auth())
    patient = export.json()["entry"][0]["resource"]
    assert patient == {"resourceType": "Patient", "id": "c4cbfddf-6f87-4acd-a34b-670178c3e535",
                       "gender": "male", "birthDate": "1992-10-13"}


def test_openapi_describes_the_fhir_routes(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    post_op = spec["paths"]["/fhir/Bundle"]["post"]
    assert {"200", "201", "400", "401", "403"} <= set(post_op["responses"])
    assert FHIR_JSON in post_op["requestBody"]["content"]
    assert "/fhir/Patient/{patient_id}/$pgx-export" in spec["paths"]
