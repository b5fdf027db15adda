"""The EHR's data about a patient without a twin (prefetch or FHIR server) as a twin state in memory.

The resources are read by the FHIR import's parser (:mod:`pgxtwin.api.fhir.bundle_import`: Patient,
weight/height/creatinine Observations, medications, PGx genotype and therapeutic-implication
Observations) and applied to an empty twin; nothing is stored.
"""

from __future__ import annotations

from typing import Any

from ...twin.state import TwinState
from ..fhir.bundle_import import facts_from_resources, plan_import


def ehr_subject(patient_id: str, resources: list[dict[str, Any]]) -> tuple[TwinState, tuple[str, ...]]:
    """(state, current medications) that these FHIR resources of the patient describe."""
    facts = facts_from_resources(resources, patient_id=patient_id)
    state = plan_import(facts, TwinState.empty(patient_id)).state
    return state, tuple(sorted({m.drug for m in state.current_medications}))
