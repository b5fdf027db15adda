"""CDS Hooks discovery: the three services, their hooks and prefetch templates."""

from __future__ import annotations

import re

import httpx

from pgxtwin.api.cds.models import Discovery

from .conftest import Service


def _discover(client: httpx.Client, service: Service) -> httpx.Response:
    token = service.cds_jwt(f"{service.base_url}/cds-services")
    return client.get("/cds-services", headers={"Authorization": f"Bearer {token}"})


def test_discovery_lists_the_services(client: httpx.Client, service: Service) -> None:
    response = _discover(client, service)
    assert response.status_code == 200
    services = {s.id: s for s in Discovery.model_validate(response.json()).services}
    assert {(i, s.hook) for i, s in services.items()} == {
        ("pgx-order-select", "order-select"), ("pgx-order-sign", "order-sign"), ("pgx-patient-view", "patient-view")}
    for definition in services.values():
        assert definition.description and definition.title
        prefetch = definition.prefetch or {}
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert "84413-4" in prefetch["pgx"]  # genotype observations
        for template in prefetch.values():
            # only the context.patientId token, in a relative FHIR read or search URL
            assert re.fullmatch(r"[A-Za-z]+(/|\?)\S*", template)
            assert set(re.findall(r"\{\{(.*?)\}\}", template)) == {"context.patientId"}
    order = services["pgx-order-sign"].prefetch or {}
    assert {"weight", "creatinine", "medications", "pgx"} <= set(order)
    assert "29463-7" in order["weight"] and "2160-0" in order["creatinine"]


def test_discovery_needs_the_client_jwt(client: httpx.Client, service: Service) -> None:
    assert client.get("/cds-services").status_code == 401
    # a REST bearer token from the OAuth issuer is no CDS client JWT
    assert client.get("/cds-services", headers=service.auth()).status_code == 401


def test_every_advertised_service_answers(client: httpx.Client, service: Service) -> None:
    for definition in _discover(client, service).json()["services"]:
        body = {"hook": definition["hook"], "hookInstance": "d-1",
                "context": {"patientId": "unknown-patient", "selections": ["MedicationRequest/x"],
                            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": []}}}
        response = client.post(f"/cds-services/{definition['id']}", json=body,
                               headers=service.cds_headers(definition["id"]))
        # no twin and nothing to fetch from: patient-view needs data (412); empty orders need none
        assert response.status_code == (412 if definition["hook"] == "patient-view" else 200), response.text
