"""CDS Hooks services against a real service: order-sign / order-select cards from the patient's
twin, patient-view summaries, patients without a twin (prefetch, the FHIR server, 412), audit and
card records."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pgxtwin.api.cds.models import CdsResponse
from pgxtwin.genomics.outside_calls import OutsideCall, outside_gene_result

from .conftest import CDS_ISS, SHARED, Service, _free_port

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
GENOMICS = SHARED / "fixtures" / "fhir" / "genomics-reporting-3.0.0"


# --- helpers shared by the CDS test modules


def make_twin(service: Service, patient_id: str, genes: dict[str, str], *, weight: float | None = 80.0,
              medications: list[tuple[str, float, float]] = ()) -> None:
    """A twin with outside calls (gene -> diplotype), demographics, weight and medications (drug, mg, h)."""
    store = service.app.state.twins
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    events: list[dict[str, Any]] = [{"type": "demographics_set", "sex": "F", "age_years": 58, "age_recorded_at": now}]
    if weight is not None:
        events.append({"type": "covariate_recorded", "covariate": "weight", "value": weight, "unit": "kg", "time": now})
    for gene, diplotype in genes.items():
        result = outside_gene_result(OutsideCall(gene, diplotype, None, "test"))
        events.append({"type": "outside_call_set", "gene": gene, "result": result.model_dump(mode="json")})
    for drug, dose, tau in medications:
        events.append({"type": "medication_started", "medication_id": f"{drug}-1", "drug": drug, "time": now,
                       "dose": dose, "interval_h": tau})
    state = store.create_twin(patient_id)
    for event in events:
        state = store.append(patient_id, event, state.version)


def draft(medication: dict[str, Any], *, dose: dict[str, Any] | None = None, per_day: int = 1,
          order_id: str = "draft-1", patient_id: str = "p") -> dict[str, Any]:
    order: dict[str, Any] = {"resourceType": "MedicationRequest", "id": order_id, "status": "draft", "intent": "order",
                             "subject": {"reference": f"Patient/{patient_id}"}, "medicationCodeableConcept": medication}
    if dose is not None:
        order["dosageInstruction"] = [{"timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                                       "doseAndRate": [{"doseQuantity": dose}]}]
    return order


def order_request(patient_id: str, *orders: dict[str, Any], hook: str = "order-sign", **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/test", "patientId": patient_id,
                               "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                               "entry": [{"resource": o} for o in orders]}}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{orders[0]['id']}"]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context} | extra


def post(client: httpx.Client, service: Service, service_id: str, body: Any) -> httpx.Response:
    return client.post(f"/cds-services/{service_id}", json=body, headers=service.cds_headers(service_id))


def cards_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    CdsResponse.model_validate(response.json())  # the specification's card schema
    return response.json()["cards"]


CLOPIDOGREL_SCD = {"coding": [{"system": RXNORM, "code": "309362", "display": "Clopidogrel 75 MG Oral Tablet"}]}
CITALOPRAM = {"coding": [{"system": RXNORM, "code": "2556", "display": "citalopram"}]}
ABACAVIR = {"text": "abacavir 300 mg tablet"}


@pytest.fixture(scope="module")
def twins(service: Service) -> dict[str, str]:
    ids = {"pm": "cds-pm", "nm": "cds-nm", "hla": "cds-hla"}
    make_twin(service, ids["pm"], {"CYP2C19": "*2/*2"}, medications=[("clopidogrel", 75.0, 24.0)])
    make_twin(service, ids["nm"], {"CYP2C19": "*1/*1", "HLA-B": "*07:02/*08:01"})
    make_twin(service, ids["hla"], {"HLA-B": "*57:01/*08:01"})
    return ids


# --- twins


def test_poor_metabolizer_on_clopidogrel_gets_one_critical_card(client: httpx.Client, service: Service,
                                                                  twins: dict[str, str]) -> None:
    pid = twins["pm"]
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    [card] = cards_of(post(client, service, "pgx-order-sign", body))
    assert card["indicator"] == "critical"
    assert len(card["summary"]) < 140 and "clopidogrel" in card["summary"].lower()
    assert "CYP2C19 Poor Metabolizer" in card["summary"]
    assert card["source"]["url"] == "https://cpicpgx.org/guidelines/guideline-for-clopidogrel-and-cyp2c19/"
    # the detail shows the predicted exposure against the target, and the reason
    assert "75 mg every 24 h" in card["detail"] and "vs target" in card["detail"]
    assert "probability of target attainment" in card["detail"] and "Avoid standard dose" in card["detail"]
    assert card["selectionBehavior"] == "at-most-one"
    cancel = card["suggestions"][-1]
    assert cancel["actions"] == [{"type": "delete", "description": "Remove the clopidogrel order",
                                  "resourceId": "MedicationRequest/draft-1"}]
    assert all(r["display"] for r in card["overrideReasons"])
    # the card's rule is recorded for feedback; the twin read is audited with the CDS client as actor
    assert service.app.state.service.card_rule(card["uuid"]) == "clopidogrel:CYP2C19:Poor Metabolizer"
    reads = [a for a in service.app.state.twins.audit_log(pid) if a.action == "read_state"]
    assert reads[-1].actor == f"{CDS_ISS}|ehr-client" and reads[-1].entry_point == "cds:pgx-order-sign"


def test_repeated_calls_are_audited_each_time_and_give_fresh_card_ids(client: httpx.Client, service: Service,
                                                                      twins: dict[str, str]) -> None:
    pid = twins["pm"]
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    before = len([a for a in service.app.state.twins.audit_log(pid) if a.action == "read_state"])
    first, second = (cards_of(post(client, service, "pgx-order-sign", body))[0] for _ in range(2))
    assert first["uuid"] != second["uuid"] and first["summary"] == second["summary"]
    after = [a for a in service.app.state.twins.audit_log(pid) if a.action == "read_state"]
    assert len(after) == before + 2


def test_a_dose_the_twin_would_change_is_replaced_by_an_update_of_the_draft(client: httpx.Client, service: Service,
                                                                            twins: dict[str, str]) -> None:
    pid = twins["pm"]
    order = draft(CITALOPRAM, dose={"value": 40, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
                  patient_id=pid, order_id="cit-1")
    [card] = cards_of(post(client, service, "pgx-order-sign", order_request(pid, order)))
    assert card["indicator"] == "warning"
    assert service.app.state.service.card_rule(card["uuid"]) == "citalopram:CYP2C19:Poor Metabolizer"
    [update] = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "update"]
    resource = update["resource"]
    assert resource["id"] == "cit-1" and resource["medicationCodeableConcept"] == CITALOPRAM
    new_dose = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert new_dose["code"] == "mg" and new_dose["value"] < 40


def test_nothing_to_say_means_no_card(client: httpx.Client, service: Service, twins: dict[str, str]) -> None:
    pid = twins["nm"]
    normal = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    assert cards_of(post(client, service, "pgx-order-sign", normal)) == []
    # HLA-B typed and negative for *57:01: abacavir is fine
    assert cards_of(post(client, service, "pgx-order-sign", order_request(pid, draft(ABACAVIR, patient_id=pid)))) == []


def test_hla_carrier_gets_a_critical_card_on_abacavir(client: httpx.Client, service: Service,
                                                      twins: dict[str, str]) -> None:
    pid = twins["hla"]
    [card] = cards_of(post(client, service, "pgx-order-sign", order_request(pid, draft(ABACAVIR, patient_id=pid))))
    assert card["indicator"] == "critical" and "HLA-B*57:01" in card["summary"]
    assert service.app.state.service.card_rule(card["uuid"]) == "abacavir:HLA-B:*57:01"


def test_order_select_checks_only_the_selected_order(client: httpx.Client, service: Service,
                                                     twins: dict[str, str]) -> None:
    pid = twins["pm"]
    amoxicillin = draft({"text": "amoxicillin 500 mg capsule"}, order_id="amox", patient_id=pid)
    clopidogrel = draft(CLOPIDOGREL_SCD, order_id="clop", patient_id=pid)
    selected_amox = order_request(pid, amoxicillin, clopidogrel, hook="order-select")
    assert cards_of(post(client, service, "pgx-order-select", selected_amox)) == []
    selected_clop = order_request(pid, clopidogrel, amoxicillin, hook="order-select")
    [card] = cards_of(post(client, service, "pgx-order-select", selected_clop))
    # no dose in the order: evaluated at the labelled dose, and the card says so
    assert "labelled standard dose 75 mg" in card["detail"]


def test_patient_view_summarises_actionable_results(client: httpx.Client, service: Service,
                                                    twins: dict[str, str]) -> None:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/x", "patientId": twins["pm"]}}
    [card] = cards_of(post(client, service, "pgx-patient-view", body))
    # a current medication (clopidogrel) is affected: warning, and named in the summary
    assert card["indicator"] == "warning" and "clopidogrel" in card["summary"]
    assert "| CYP2C19 | Poor Metabolizer |" in card["detail"]
    assert service.app.state.service.card_rule(card["uuid"]) == "chart:pgx-summary"
    body["context"]["patientId"] = twins["nm"]
    assert cards_of(post(client, service, "pgx-patient-view", body)) == []


# --- patients without a twin


def _genotype_observation(patient_id: str) -> dict[str, Any]:
    path = GENOMICS / "Observation-Pgx-geno-1001.json"  # CYP2C19*2/*2
    if not path.exists():
        pytest.skip("../shared fixtures absent")
    resource = json.loads(path.read_text())
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    return resource


def test_prefetched_genotype_stands_in_for_a_twin(client: httpx.Client, service: Service) -> None:
    pid = "no-twin-1"
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    body["prefetch"] = {"patient": {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1960-05-01"},
                        "pgx": {"resourceType": "Bundle", "type": "searchset",
                                "entry": [{"resource": _genotype_observation(pid)}]},
                        "weight": None, "height": None, "creatinine": None, "medications": None}
    [card] = cards_of(post(client, service, "pgx-order-sign", body))
    assert card["indicator"] == "critical" and "no twin" in card["detail"] and "prefetch" in card["detail"]
    # another patient's genotype in the prefetch is never used
    body["prefetch"]["pgx"]["entry"][0]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    assert cards_of(post(client, service, "pgx-order-sign", body)) == []


def test_no_genotype_suggests_testing_where_the_label_asks_for_it(client: httpx.Client, service: Service) -> None:
    pid = "no-twin-2"
    prefetch = {"pgx": None, "patient": None, "weight": None, "height": None, "creatinine": None, "medications": None}
    body = order_request(pid, draft(ABACAVIR, patient_id=pid), prefetch=prefetch)
    [card] = cards_of(post(client, service, "pgx-order-sign", body))
    assert card["indicator"] == "info" and "HLA-B testing required" in card["summary"]
    assert service.app.state.service.card_rule(card["uuid"]) == "abacavir:HLA-B:testing"
    # clopidogrel's label does not require testing: no card
    body = order_request(pid, draft(CLOPIDOGREL_SCD, patient_id=pid), prefetch=prefetch)
    assert cards_of(post(client, service, "pgx-order-sign", body)) == []


class FhirServer:
    """A tiny FHIR server on loopback that serves one patient's genotype and records the
    Authorization headers it receives and the client ports they came from (one per connection)."""

    def __init__(self, patient_id: str, genotype: dict[str, Any]) -> None:
        self.authorization: list[str | None] = []
        self.ports: list[int] = []
        app = FastAPI()

        @app.middleware("http")
        async def record_port(request: Request, call_next: Any) -> Any:
            self.ports.append(request.client.port if request.client else -1)
            return await call_next(request)

        @app.get("/fhir/Patient/{pid}")
        def patient(pid: str, request: Request) -> JSONResponse:
            self.authorization.append(request.headers.get("authorization"))
            return JSONResponse({"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-02-03"})

        @app.get("/fhir/{kind}")
        def search(kind: str, request: Request) -> JSONResponse:
            self.authorization.append(request.headers.get("authorization"))
            codes = request.query_params.get("code", "")
            entries = [{"resource": genotype}] if kind == "Observation" and "84413-4" in codes \
                and request.query_params.get("patient") == patient_id else []
            return JSONResponse({"resourceType": "Bundle", "type": "searchset", "entry": entries})

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FhirServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "FHIR server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@pytest.fixture()
def fhir_server() -> Iterator[FhirServer]:
    with FhirServer("no-twin-3", _genotype_observation("no-twin-3")) as server:
        yield server


def test_missing_prefetch_is_fetched_from_the_fhir_server_with_the_token(client: httpx.Client, service: Service,
                                                                         fhir_server: FhirServer) -> None:
    pid = "no-twin-3"
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid),
                         fhirServer=fhir_server.base,
                         fhirAuthorization={"access_token": "opaque-token-123", "token_type": "Bearer",
                                            "expires_in": 300, "scope": "user/Observation.read", "subject": "pgxtwin"})
    [card] = cards_of(post(client, service, "pgx-order-sign", body))
    assert card["indicator"] == "critical" and "FHIR server" in card["detail"]
    assert fhir_server.authorization and set(fhir_server.authorization) == {"Bearer opaque-token-123"}


def test_outbound_fhir_calls_share_one_client_and_its_connections(client: httpx.Client, service: Service,
                                                                   fhir_server: FhirServer) -> None:
    """One HTTP client per application: a later call reuses the connections an earlier one opened
    (kept alive), each request still with its own call's token."""
    pid = "no-twin-3"
    order = draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid)
    seen: list[set[int]] = []
    for token in ("first-token", "second-token"):
        start = len(fhir_server.ports)
        body = order_request(pid, order, fhirServer=fhir_server.base,
                             fhirAuthorization={"access_token": token, "token_type": "Bearer"})
        assert len(cards_of(post(client, service, "pgx-order-sign", body))) == 1
        seen.append(set(fhir_server.ports[start:]))
        assert fhir_server.authorization[-1] == f"Bearer {token}"
    assert seen[1] & seen[0]  # the first call's connections (closed with a per-call client) were reused


def test_no_twin_and_no_way_to_get_data_is_412(client: httpx.Client, service: Service) -> None:
    pid = "no-twin-4"
    order = draft(CLOPIDOGREL_SCD, patient_id=pid)
    response = post(client, service, "pgx-order-sign", order_request(pid, order))
    assert response.status_code == 412 and "error" in response.json() and "cards" not in response.json()
    unreachable = order_request(pid, order, fhirServer=f"http://127.0.0.1:{_free_port()}/fhir",
                                fhirAuthorization={"access_token": "t", "token_type": "Bearer"})
    response = post(client, service, "pgx-order-sign", unreachable)
    assert response.status_code == 412 and "FHIR server" in response.json()["error"]
    # the client reported an error fetching the genotypes (OperationOutcome): no follow-up, 412
    failed = copy.deepcopy(order_request(pid, order))
    failed["prefetch"] = {"pgx": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}}
    assert post(client, service, "pgx-order-sign", failed).status_code == 412


def test_prefetch_templates_are_readable_by_the_fhir_import() -> None:
    """What the pgx template asks for is what the FHIR import reads (genotype 84413-4)."""
    from pgxtwin.api.cds.ehr import ehr_subject

    state, _ = ehr_subject("p1", [_genotype_observation("p1")])
    assert state.genotype.genes["CYP2C19"].phenotype == "Poor Metabolizer"


def test_concurrent_calls_each_record_their_audit_entry_and_cards(client: httpx.Client, service: Service,
                                                                  twins: dict[str, str]) -> None:
    """Calls that commit together (group commit) still record every read and every card."""
    from concurrent.futures import ThreadPoolExecutor

    pid = twins["pm"]
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    reads = lambda: len([a for a in service.app.state.twins.audit_log(pid) if a.action == "read_state"])  # noqa: E731
    before = reads()
    with ThreadPoolExecutor(16) as pool, httpx.Client(base_url=service.base_url, timeout=60) as c:
        responses = list(pool.map(lambda _: post(c, service, "pgx-order-sign", body), range(48)))
    cards = [card for r in responses for card in cards_of(r)]
    assert len(cards) == 48 and len({c["uuid"] for c in cards}) == 48
    assert all(service.app.state.service.card_rule(c["uuid"]) == "clopidogrel:CYP2C19:Poor Metabolizer" for c in cards)
    assert reads() == before + 48


def test_group_commit_writes_queued_calls_together_and_hands_a_failure_to_each() -> None:
    from pgxtwin.store.recorder import GroupCommit, Records

    first_batch_open = threading.Event()
    release = threading.Event()
    batches: list[list[int]] = []

    def write(batch: list[Records]) -> list[bool]:
        batches.append([a["i"] for r in batch for a in r.audit])
        if len(batches) == 1:
            first_batch_open.set()
            assert release.wait(10)
            return [True] * len(batch)
        raise RuntimeError("disk full")

    commit = GroupCommit(write)
    outcomes: dict[int, str] = {}

    def submit(i: int) -> None:
        try:
            commit.submit(Records(audit=[{"i": i}]))
            outcomes[i] = "committed"
        except RuntimeError:
            outcomes[i] = "failed"

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    assert first_batch_open.wait(10)
    threads += [threading.Thread(target=submit, args=(i,)) for i in range(1, 5)]
    for t in threads[1:]:
        t.start()
    deadline = time.time() + 10
    while len(commit._queue) < 4:  # the four wait behind the first batch
        assert time.time() < deadline
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(10)
    assert len(batches) == 2 and batches[0] == [0] and sorted(batches[1]) == [1, 2, 3, 4]  # one commit for the four
    assert outcomes == {0: "committed", 1: "failed", 2: "failed", 3: "failed", 4: "failed"}


def test_a_token_another_process_claimed_gets_401_and_no_card(client: httpx.Client, service: Service,
                                                               twins: dict[str, str]) -> None:
    """A call claims its token in the commit of its cards: when another service process claimed the
    jti first (here: the store, directly), the call answers 401, records no card, and its twin read
    is in the audit log as refused; a failing call (412) claims its token too."""
    from datetime import timedelta

    import jwt

    from pgxtwin.store.recorder import claim_token

    pid = twins["pm"]
    body = order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))
    # (a process's first read of a twin version is audited by the store as it reads it)
    assert len(cards_of(post(client, service, "pgx-order-sign", body))) == 1
    url = f"{service.base_url}/cds-services/pgx-order-sign"
    token = service.cds_jwt(url)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    store = service.app.state.twins
    assert claim_token(store, CDS_ISS, jti, datetime.now(timezone.utc) + timedelta(minutes=10))
    reads = lambda: [a for a in store.audit_log(pid) if a.action == "read_state"]  # noqa: E731
    before = len(reads())
    response = client.post("/cds-services/pgx-order-sign", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and "replayed" in response.json()["error"] and "cards" not in response.json()
    refused = reads()[before:]
    assert [(a.outcome, a.detail) for a in refused] == [("refused", "CDS client JWT replayed (jti seen before)")]
    # the 412 of a patient without a twin or data also uses up its token
    token = service.cds_jwt(url)
    nobody = order_request("cds-nobody", draft(CLOPIDOGREL_SCD, patient_id="cds-nobody"))
    assert client.post("/cds-services/pgx-order-sign", json=nobody,
                       headers={"Authorization": f"Bearer {token}"}).status_code == 412
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert not claim_token(store, CDS_ISS, jti, datetime.now(timezone.utc) + timedelta(minutes=10))
