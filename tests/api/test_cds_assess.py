"""The CDS assessment of a twin with drug levels: the posterior is estimated once per (patient,
version, drug), and the verdicts are those of ``pgxtwin twin evaluate``."""

from __future__ import annotations

from typing import Any

import pytest

import pgxtwin.twin.estimation as estimation
from pgxtwin.api.cds.assess import AssessmentCache, Subject, assess_drug
from pgxtwin.api.fhir.bundle_import import facts_from_resources, plan_import, resources_in
from pgxtwin.twin.state import TwinState
from pgxtwin.twin.workflow import evaluations

from .test_fhir_import import PID, tacrolimus_bundle


def test_one_estimate_per_twin_version_and_drug_with_the_evaluations_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    state = plan_import(facts_from_resources(resources_in(tacrolimus_bundle())), TwinState.empty(PID)).state
    assert state.concentrations("tacrolimus")
    expected = {dose: evaluations(state, [("tacrolimus", f"{dose:g} mg", 12.0)])[0] for dose in (3.0, 4.0)}

    calls: list[str] = []
    real = estimation.estimate

    def counted(drug: str, *args: Any, **kwargs: Any) -> Any:  # the real estimate, counted
        calls.append(drug)
        return real(drug, *args, **kwargs)

    monkeypatch.setattr(estimation, "estimate", counted)
    cache = AssessmentCache()
    subject = Subject(state, f"twin:{state.version}", ())
    for dose, (evaluation, notes, _) in expected.items():
        assessment = assess_drug(cache, PID, subject, "tacrolimus", dose, 12.0)
        assert assessment.evaluation.as_dict() == evaluation.as_dict()
        assert list(assessment.notes) == notes and notes == ["individualised from 2 measured level(s)"]
    assert calls == ["tacrolimus"]  # two doses asked about, one estimate
    # another version of the twin is estimated again
    assess_drug(cache, PID, Subject(state, f"twin:{state.version + 1}", ()), "tacrolimus", 3.0, 12.0)
    assert calls == ["tacrolimus"] * 2
