"""REST over the twins on a real uvicorn server: create, read with ETags, conditional writes,
history pagination, idempotency keys, bad input, decisions and the audit log."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from fastapi import HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st

from pgxtwin.api.rest_common import decode_cursor, encode_cursor, if_match_version, plain_json

ACTOR = "https://auth.test.example/|clinician-1"


@pytest.fixture(scope="module")
def api_spec(service):
    """The served OpenAPI spec, to check that responses are what it says (schemathesis' validator)."""
    import schemathesis

    with httpx.Client(base_url=service.base_url, timeout=30) as c:
        return schemathesis.openapi.from_dict(c.get("/openapi.json").json())


def conforms(spec, template: str, response: httpx.Response) -> httpx.Response:
    """``response`` has a status, media type, headers and body that the spec documents for the operation."""
    spec[template][response.request.method].validate_response(response)
    return response


def _pid() -> str:
    return f"pat-{uuid.uuid4().hex[:12]}"


def _is_outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]
    return body


def _create(client, service, pid: str, **body) -> httpx.Response:
    r = client.post("/patients", json={"patient_id": pid, **body}, headers=service.auth())
    assert r.status_code == 201, r.text
    return r


def test_health_and_openapi_need_no_token_and_describe_every_endpoint(client):
    assert client.get("/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/patients", "/patients/{patient_id}", "/patients/{patient_id}/history", "/patients/{patient_id}/vcf",
                 "/jobs/{job_id}", "/patients/{patient_id}/evaluate", "/patients/{patient_id}/recommend",
                 "/patients/{patient_id}/report", "/simulate", "/patients/{patient_id}/observations"):
        assert path in paths
    for path, operations in paths.items():
        for method, op in operations.items():
            if not path.startswith(("/patients", "/jobs", "/simulate")):
                continue
            assert op.get("security"), f"{method} {path} declares no bearer token"
            assert "401" in op["responses"] and "400" in op["responses"]
            assert "HTTPValidationError" not in json.dumps(op["responses"]), "invalid requests are 400s here"
    write = paths["/patients/{patient_id}/medications"]["post"]
    assert {"412", "428", "422"} <= set(write["responses"])
    assert {p["name"] for p in write["parameters"]} >= {"If-Match", "Idempotency-Key"}


def test_create_read_with_etag_conditional_write_and_history_pages(client, service, api_spec):
    pid = _pid()
    created = _create(client, service, pid, demographics={"sex": "F", "age_years": 64},
                      covariates=[{"covariate": "weight", "value": 72, "unit": "kg"},
                                  {"covariate": "height", "value": 65, "unit": "in"}])
    assert created.headers["etag"] == '"3"' and created.headers["location"] == f"/patients/{pid}"
    conforms(api_spec, "/patients", created)
    assert [a["event_type"] for a in created.json()["appended"]] == ["demographics_set", "covariate_recorded",
                                                                     "covariate_recorded"]

    read = conforms(api_spec, "/patients/{patient_id}", client.get(f"/patients/{pid}", headers=service.auth()))
    assert read.status_code == 200 and read.headers["etag"] == '"3"'
    assert read.headers["cache-control"] == "no-store"
    doc = read.json()
    assert doc["version"] == doc["latest_version"] == 3
    assert doc["covariates"]["weight_kg"] == 72 and doc["covariates"]["height_cm"] == pytest.approx(165.1)
    assert doc["state"]["demographics"]["sex"] == "F"

    change = {"measurements": [{"covariate": "weight", "value": 70, "unit": "kg"}]}
    covariates = "/patients/{patient_id}/covariates"
    _is_outcome(conforms(api_spec, covariates, client.post(f"/patients/{pid}/covariates", json=change,
                                                           headers=service.auth())), 428)
    _is_outcome(conforms(api_spec, covariates, client.post(f"/patients/{pid}/covariates", json=change,
                                                           headers=service.auth() | {"If-Match": '"2"'})), 412)
    _is_outcome(client.post(f"/patients/{pid}/covariates", json=change, headers=service.auth() | {"If-Match": "soon"}), 400)
    ok = conforms(api_spec, covariates,
                  client.post(f"/patients/{pid}/covariates", json=change, headers=service.auth() | {"If-Match": '"3"'}))
    assert ok.status_code == 200 and ok.headers["etag"] == '"4"' and ok.json()["version"] == 4
    assert client.get(f"/patients/{pid}", headers=service.auth()).json()["covariates"]["weight_kg"] == 70

    past = client.get(f"/patients/{pid}", params={"version": 3}, headers=service.auth())
    assert past.headers["etag"] == '"3"' and past.json()["latest_version"] == 4
    assert past.json()["covariates"]["weight_kg"] == 72
    _is_outcome(client.get(f"/patients/{pid}", params={"version": 9}, headers=service.auth()), 404)
    _is_outcome(client.get("/patients/nobody-here", headers=service.auth()), 404)

    versions, cursor, pages = [], None, 0
    while True:
        page = conforms(api_spec, "/patients/{patient_id}/history", client.get(
            f"/patients/{pid}/history", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
            headers=service.auth())).json()
        versions += [item["version"] for item in page["items"]]
        assert all(item["actor"] == ACTOR for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["next"].startswith(service.base_url)
    assert versions == [1, 2, 3, 4] and pages == 2
    _is_outcome(client.get(f"/patients/{pid}/history", params={"cursor": encode_cursor("patients", "x")},
                           headers=service.auth()), 400)


def test_listing_is_paginated_by_patient_id(client, service, api_spec):
    ids = sorted(f"list-{uuid.uuid4().hex[:8]}-{k}" for k in range(3))
    for pid in ids:
        _create(client, service, pid)
    seen, cursor = [], None
    while True:
        page = conforms(api_spec, "/patients", client.get(
            "/patients", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=service.auth())).json()
        assert len(page["items"]) <= 2
        seen += [item["patient_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and set(ids) <= set(seen)
    assert len(seen) == len(set(seen))


def test_a_page_of_twins_is_one_query(client, service):
    """Listing reads a page of twins with their versions in one statement, whatever the page size."""
    from sqlalchemy import event

    for k in range(4):
        _create(client, service, f"query-{uuid.uuid4().hex[:8]}-{k}")
    engine = service.app.state.twins.engine
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for limit in (1, 4):
            statements.clear()
            page = client.get("/patients", params={"limit": limit}, headers=service.auth()).json()
            assert len(page["items"]) == limit and all(item["version"] >= 0 for item in page["items"])
            reads = [s for s in statements if "FROM twins" in s]
            assert len(reads) == 1, reads
        # a patient-scoped token lists its own twin only, in one statement too
        pid = page["items"][0]["patient_id"]
        statements.clear()
        own = client.get("/patients", headers=service.auth("patient/*.read", patient=pid)).json()
        assert [item["patient_id"] for item in own["items"]] == [pid]
        assert len([s for s in statements if "FROM twins" in s]) == 1
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_idempotency_key_replays_the_first_response_and_refuses_another_body(client, service):
    pid = _pid()
    _create(client, service, pid, covariates=[{"covariate": "weight", "value": 80, "unit": "kg"}])
    body = {"drug": "clopidogrel", "dose": "75 mg", "every": "24h", "given": 2}
    headers = service.auth() | {"If-Match": '"1"', "Idempotency-Key": "start-clopidogrel-1"}
    first = client.post(f"/patients/{pid}/medications", json=body, headers=headers)
    assert first.status_code == 200 and first.json()["version"] == 4
    again = client.post(f"/patients/{pid}/medications", json=body, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and again.headers["etag"] == first.headers["etag"] == '"4"'
    history = client.get(f"/patients/{pid}/history", headers=service.auth()).json()["items"]
    assert [h["event_type"] for h in history].count("medication_started") == 1

    other = client.post(f"/patients/{pid}/medications", json=body | {"given": 3}, headers=headers)
    assert "different request" in _is_outcome(other, 422)["issue"][0]["diagnostics"]
    # the key belongs to the token's subject: another clinician's same key is a new write (here: a stale one)
    stranger = service.auth(sub="clinician-2") | {"If-Match": '"1"', "Idempotency-Key": "start-clopidogrel-1"}
    _is_outcome(client.post(f"/patients/{pid}/medications", json=body, headers=stranger), 412)
    _is_outcome(client.post(f"/patients/{pid}/medications", json=body,
                            headers=headers | {"Idempotency-Key": "bad key with spaces"}), 400)


def test_create_twice_is_409_unless_it_is_a_retry(client, service):
    pid = _pid()
    headers = service.auth() | {"Idempotency-Key": f"create-{pid}"}
    first = client.post("/patients", json={"patient_id": pid}, headers=headers)
    retry = client.post("/patients", json={"patient_id": pid}, headers=headers)
    assert first.status_code == retry.status_code == 201 and retry.json() == first.json()
    _is_outcome(client.post("/patients", json={"patient_id": pid}, headers=service.auth()), 409)


def test_bad_input_is_a_4xx_operation_outcome_and_writes_nothing(client, service):
    pid = _pid()
    auth = service.auth()
    _is_outcome(client.post("/patients", content=b'{"patient_id": "x",', headers=auth | {"content-type": "application/json"}), 400)
    unknown = _is_outcome(client.post("/patients", json={"patient_id": pid, "colour": "blue"}, headers=auth), 400)
    assert "colour" in unknown["issue"][0]["diagnostics"]
    _is_outcome(client.post("/patients", json={"patient_id": "bad id!"}, headers=auth), 400)
    implausible = {"patient_id": pid, "covariates": [{"covariate": "weight", "value": 700, "unit": "kg"}]}
    assert "weight" in _is_outcome(client.post("/patients", json=implausible, headers=auth), 400)["issue"][0]["diagnostics"]
    _is_outcome(client.get(f"/patients/{pid}", headers=auth), 404)  # nothing half-written
    _is_outcome(client.post("/patients", content=b"[" * 2_000_000, headers=auth | {"content-type": "application/json"}), 413)
    _is_outcome(client.get("/patients", params={"limit": 0}, headers=auth), 400)
    _is_outcome(client.get("/patients", params={"cursor": "%%%"}, headers=auth), 400)

    _create(client, service, pid)
    dose_first = {"events": [{"type": "dose_recorded", "medication_id": "nope", "time": "2026-01-01T08:00:00Z", "amount": 5}]}
    _is_outcome(client.post(f"/patients/{pid}/events", json=dose_first, headers=auth | {"If-Match": '"0"'}), 400)
    unknown_drug = {"drug": "notadrug", "dose": "5 mg"}
    _is_outcome(client.post(f"/patients/{pid}/medications", json=unknown_drug, headers=auth | {"If-Match": '"0"'}), 400)
    assert client.get(f"/patients/{pid}", headers=auth).headers["etag"] == '"0"'


def test_raw_events_and_a_drug_level_reestimate_then_decisions(client, service, api_spec):
    pid = _pid()
    auth = service.auth()
    _create(client, service, pid, demographics={"sex": "F", "age_years": 64},
            covariates=[{"covariate": "weight", "value": 72, "unit": "kg"}])
    med = client.post(f"/patients/{pid}/medications", headers=auth | {"If-Match": '"2"'},
                      json={"drug": "escitalopram", "dose": "10 mg", "start": "2026-11-20T08:00:00+00:00", "given": 4})
    assert med.status_code == 200 and med.json()["version"] == 7
    med_id = med.json()["medication_id"]
    dose = {"events": [{"type": "dose_recorded", "medication_id": med_id, "time": "2026-11-24T08:00:00Z", "amount": 10}]}
    assert client.post(f"/patients/{pid}/events", json=dose, headers=auth | {"If-Match": '"7"'}).json()["version"] == 8

    level = {"drug": "escitalopram", "value": 31, "unit": "ng/mL", "hours_after_first_dose": 95.5}
    observed = conforms(api_spec, "/patients/{patient_id}/observations",
                        client.post(f"/patients/{pid}/observations", json=level, headers=auth | {"If-Match": '"8"'}))
    assert observed.status_code == 200, observed.text
    out = observed.json()
    assert [a["event_type"] for a in out["appended"]] == ["observation_recorded", "estimate_recorded"]
    assert out["version"] == 10 and observed.headers["etag"] == '"10"'
    assert out["estimate"]["drug"] == "escitalopram" and "cl" in out["estimate"]["parameters"]
    assert out["appended"][0]["summary"].startswith("escitalopram concentration 0.031 mg/L")

    verdicts = conforms(api_spec, "/patients/{patient_id}/evaluate",
                        client.get(f"/patients/{pid}/evaluate", headers=auth)).json()
    assert verdicts["version"] == 10 and verdicts["evaluations"][0]["drug"] == "escitalopram"
    assert verdicts["evaluations"][0]["verdict"] in ("ok", "adjust_dose", "avoid", "insufficient_data")
    assert "individualised from 1 measured level(s)" in verdicts["evaluations"][0]["notes"]
    new = client.post(f"/patients/{pid}/evaluate", json={"prescriptions": [{"drug": "clopidogrel", "dose": "75 mg"}]},
                      headers=auth).json()
    assert new["evaluations"][0]["drug"] == "clopidogrel"
    _is_outcome(client.get(f"/patients/{pid}/evaluate", params={"drug": "clopidogrel"}, headers=auth), 400)

    choice = conforms(api_spec, "/patients/{patient_id}/recommend",
                      client.get(f"/patients/{pid}/recommend", params={"drug": "escitalopram"}, headers=auth)).json()
    assert choice["drug"] == "escitalopram" and choice["recommendation"]["dose_mg"] > 0
    assert choice["recommendation"]["notes"] == ["individualised from 1 measured level(s)"]

    report = conforms(api_spec, "/patients/{patient_id}/report", client.get(f"/patients/{pid}/report", headers=auth))
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert pid in report.text and "escitalopram" in report.text and report.headers["etag"] == '"10"'

    # an empty twin has nothing to evaluate
    empty = _pid()
    _create(client, service, empty)
    _is_outcome(client.get(f"/patients/{empty}/evaluate", headers=auth), 422)


def test_simulate_is_stateless_and_bounded(client, service, api_spec):
    auth = service.auth("user/*.read")
    body = {"drug": "clopidogrel", "dose": "75 mg", "every": "24h", "days": 3, "n": 50,
            "patient": {"phenotypes": {"CYP2C19": "Poor Metabolizer"}, "weight_kg": 70}}
    out = conforms(api_spec, "/simulate", client.post("/simulate", json=body, headers=auth))
    assert out.status_code == 200, out.text
    sim = out.json()
    assert sim["drug"] == "clopidogrel" and sim["n"] == 50 and sim["analytes"]
    _is_outcome(client.post("/simulate", json=body | {"n": 100_000}, headers=auth), 400)
    _is_outcome(client.post("/simulate", json=body | {"days": 1e6}, headers=auth), 400)
    _is_outcome(client.post("/simulate", json=body | {"patient": {"diplotypes": {"CYP2C19": "*1/*999"}}}, headers=auth), 400)
    _is_outcome(client.post("/simulate", json=body | {"patient": {"phenotypes": {"NOTAGENE": "Poor Metabolizer"}}},
                            headers=auth), 400)


def test_regimen_errors_name_the_body_field_not_a_command_line_option(client, service):
    """The messages of bad regimen values name the field (``dose``, ``every``), never a CLI flag."""
    auth = service.auth("user/*.read")
    body = {"drug": "clopidogrel", "dose": "75 mg", "every": "24h", "days": 3, "n": 1, "patient": {}}
    cases = [({"dose": "seventy mg"}, "dose: "), ({"dose": "75 g"}, "dose '75 g' (75000 mg) is implausible"),
             ({"dose": "1 mg/kg"}, "dose '1 mg/kg' is per kg: the patient's weight is needed"),
             ({"every": "soon"}, "every: ")]
    for change, start in cases:
        message = _is_outcome(client.post("/simulate", json=body | change, headers=auth), 400)["issue"][0]["diagnostics"]
        assert message.startswith(start) and "--" not in message, message


def test_audit_log_records_reads_and_writes_with_the_principal(client, service):
    pid = _pid()
    _create(client, service, pid, covariates=[{"covariate": "weight", "value": 60, "unit": "kg"}])
    client.get(f"/patients/{pid}", headers=service.auth())
    client.get(f"/patients/{pid}/history", headers=service.auth())
    client.post(f"/patients/{pid}/covariates", json={"measurements": [{"covariate": "weight", "value": 61, "unit": "kg"}]},
                headers=service.auth() | {"If-Match": '"0"'})
    rows = service.app.state.twins.audit_log(pid)
    seen = {(r.action, r.entry_point, r.outcome) for r in rows}
    assert ("create_twin", "api:POST /patients", "ok") in seen
    assert ("append:covariate_recorded", "api:POST /patients", "ok") in seen
    assert ("read_state", "api:GET /patients/{patient_id}", "ok") in seen
    assert ("read_history", "api:GET /patients/{patient_id}/history", "ok") in seen
    assert ("append", "api:POST /patients/{patient_id}/covariates", "conflict") in seen
    assert {r.actor for r in rows} == {ACTOR}


# ------------------------------------------------------------------------------ parsers (no server)

@given(st.integers(min_value=0, max_value=10**17))
def test_a_version_etag_round_trips(version):
    assert if_match_version(f'"{version}"') == if_match_version(f'W/"{version}"') == version


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_if_match_is_a_version_or_a_client_error(text):
    try:
        version = if_match_version(text)
    except HTTPException as exc:
        assert exc.status_code in (400, 428)
    else:
        assert version >= 0 and str(version) in text


@given(st.sampled_from(["patients", "history"]), st.one_of(st.text(max_size=64), st.integers(0, 10**9)))
def test_cursors_round_trip_and_are_kind_bound(kind, after):
    cursor = encode_cursor(kind, after)
    assert decode_cursor(cursor, kind, type(after)) == after
    other = "history" if kind == "patients" else "patients"
    with pytest.raises(HTTPException) as refused:
        decode_cursor(cursor, other, type(after))
    assert refused.value.status_code == 400


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_any_cursor_text_is_a_position_or_a_400(text):
    try:
        decode_cursor(text, "patients", str)
    except HTTPException as exc:
        assert exc.status_code == 400


def test_plain_json_has_no_nan_or_numpy():
    import numpy as np

    out = plain_json({"a": np.float64("nan"), "b": (np.int64(3), float("inf")), "c": np.array([1.5, 2.5])})
    assert out == {"a": None, "b": [3, None], "c": [1.5, 2.5]}
    json.dumps(out, allow_nan=False)
