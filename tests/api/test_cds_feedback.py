"""CDS Hooks feedback: accepted and overridden outcomes stored once each, counted per card rule."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from .conftest import SHARED, Service
from .test_cds_services import CLOPIDOGREL_SCD, cards_of, draft, make_twin, order_request, post

SPEC = SHARED / "fixtures" / "cds-hooks" / "spec-2.0.1"


def _feedback(client: httpx.Client, service: Service, body: Any, service_id: str = "pgx-order-sign") -> httpx.Response:
    return client.post(f"/cds-services/{service_id}/feedback", json=body,
                       headers=service.cds_headers(f"{service_id}/feedback"))


@pytest.mark.parametrize("name", ["feedback-accepted.json", "feedback-overridden.json",
                                  "feedback-overridden-with-reason.json"])
def test_spec_examples_are_stored_once(client: httpx.Client, service: Service, name: str) -> None:
    if not SPEC.exists():
        pytest.skip("../shared fixtures absent")
    body = json.loads((SPEC / name).read_text())
    assert _feedback(client, service, body).json() == {"stored": 1, "duplicates": 0}
    # a retried POST is harmless
    assert _feedback(client, service, body).json() == {"stored": 0, "duplicates": 1}


def test_override_rates_per_rule(client: httpx.Client, service: Service) -> None:
    pid = "feedback-pm"
    make_twin(service, pid, {"CYP2C19": "*2/*2"})
    cards = [cards_of(post(client, service, "pgx-order-sign",
                           order_request(pid, draft(CLOPIDOGREL_SCD, dose={"value": 1, "unit": "tablet"}, patient_id=pid))))[0]
             for _ in range(3)]
    now = "2026-01-02T03:04:05Z"
    accepted = {"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": now,
                "acceptedSuggestions": [{"id": cards[0]["suggestions"][0]["uuid"]}]}
    overridden = [{"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
                   "overrideReason": {"reason": c["overrideReasons"][0], "userComment": "tolerated before"}}
                  for c in cards[1:]]
    assert _feedback(client, service, {"feedback": [accepted, *overridden]}).json() == {"stored": 3, "duplicates": 0}
    [rule] = [s for s in service.app.state.service.feedback_summary() if s.rule == "clopidogrel:CYP2C19:Poor Metabolizer"]
    assert (rule.accepted, rule.overridden) == (1, 2) and rule.override_rate == pytest.approx(2 / 3)


@pytest.mark.parametrize("body", [
    {"feedback": []},
    {"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},  # no suggestion
    {"feedback": [{"card": "x", "outcome": "dismissed", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
    {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-01-01"}]},  # no time zone
    {"feedback": [{"card": "x" * 101, "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
    [1, 2, 3],
])
def test_invalid_feedback_is_400(client: httpx.Client, service: Service, body: Any) -> None:
    response = _feedback(client, service, body)
    assert response.status_code == 400 and "error" in response.json()


def test_feedback_errors(client: httpx.Client, service: Service) -> None:
    item = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
    assert _feedback(client, service, item, "no-such-service").status_code == 404
    assert client.post("/cds-services/pgx-order-sign/feedback", json=item).status_code == 401
    malformed = client.post("/cds-services/pgx-order-sign/feedback", content=b"{not json",
                            headers={**service.cds_headers("pgx-order-sign/feedback"), "Content-Type": "application/json"})
    assert malformed.status_code == 400 and "error" in malformed.json()
