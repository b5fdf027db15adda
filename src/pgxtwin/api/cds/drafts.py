"""Draft medication orders of a CDS Hooks request -> the drugs, doses (mg) and intervals (h) they ask for.

Each order is read by the FHIR reader of medication resources (:mod:`pgxtwin.api.fhir.medication`,
which the FHIR import uses too).  DSTU2 ``MedicationOrder`` is read like a MedicationRequest;
orders of other kinds (NutritionOrder, ...) are ignored.  Nothing here raises on malformed input:
what cannot be read is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..fhir.fhirjson import as_dict, as_list
from ..fhir.medication import read_medication

__all__ = ["DraftMedication", "draft_medications", "read_order"]

MEDICATION_ORDERS = ("MedicationRequest", "MedicationOrder")  # R4/STU3, DSTU2


@dataclass(frozen=True)
class DraftMedication:
    """One draft medication order and what it asks for (``None`` where it cannot be read)."""

    resource_type: str
    resource_id: str | None
    drugs: tuple[str, ...]          # recognised drug names (library name, else CPIC name)
    label: str                      # what the order says, for display
    dose_mg: float | None
    interval_h: float | None
    resource: Mapping[str, Any]     # the order as the client sent it

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else None


def read_order(resource: Mapping[str, Any]) -> DraftMedication | None:
    """One medication order (None for other resources)."""
    kind = resource.get("resourceType")
    if kind not in MEDICATION_ORDERS:
        return None
    read = read_medication(resource)
    rid = resource.get("id")
    return DraftMedication(str(kind), rid if isinstance(rid, str) and rid else None, read.drugs, read.label,
                           read.dose_mg, read.interval_h, resource)


def draft_medications(bundle: Mapping[str, Any], selections: Iterable[str] | None = None) -> list[DraftMedication]:
    """The medication orders of a draftOrders Bundle (only the ``selections`` when given)."""
    wanted = None if selections is None else set(selections)
    out = []
    for entry in as_list(bundle.get("entry")):
        resource = as_dict(entry).get("resource")
        if not isinstance(resource, dict):
            continue
        order = read_order(resource)
        if order is None:
            continue
        if wanted is not None and order.reference not in wanted:
            continue
        out.append(order)
    return out
