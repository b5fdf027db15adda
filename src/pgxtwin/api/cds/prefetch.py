"""Prefetch templates of the CDS services and the data behind them: from the request's ``prefetch``,
else fetched from the client's ``fhirServer`` with its ``fhirAuthorization`` token.

CDS Hooks 2.0 §Prefetch: a key the client leaves out was not satisfied (the service fetches it
itself); a ``null`` value means there is no such data; an OperationOutcome reports the client's
error in fetching it (no follow-up query).  When required data can be had neither way the service
answers 412 Precondition Failed (:class:`DataUnavailable`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ..fhir import codes
from ..fhir.fhirjson import as_dict, as_list, reference, reference_target

__all__ = ["DataUnavailable", "PatientData", "TEMPLATES", "fhir_client", "gather", "resolve"]

_PATIENT = "{{context.patientId}}"
# LOINC: 29463-7 body weight, 8302-2 body height, 2160-0 creatinine [mass/volume] in serum or
# plasma, 38483-4 creatinine [mass/volume] in blood (what Synthea records); genotypes (LOINC
# 84413-4) and therapeutic implications (Genomics Reporting IG 3.0.0 and its predecessor), as the
# FHIR import reads them (:mod:`pgxtwin.api.fhir.bundle_import`).
TEMPLATES: dict[str, str] = {
    "patient": f"Patient/{_PATIENT}",
    "weight": f"Observation?patient={_PATIENT}&code={codes.LOINC}|29463-7&_sort=-date&_count=1",
    "height": f"Observation?patient={_PATIENT}&code={codes.LOINC}|8302-2&_sort=-date&_count=1",
    "creatinine": f"Observation?patient={_PATIENT}&code={codes.LOINC}|2160-0,{codes.LOINC}|38483-4&_sort=-date&_count=1",
    "medications": f"MedicationRequest?patient={_PATIENT}&status=active",
    "pgx": (f"Observation?patient={_PATIENT}&code={codes.LOINC}|{codes.GENOTYPE},"
            f"{codes.TBD_CODES}|{codes.THERAPEUTIC_IMPLICATION},{codes.TBD_CODES}|{codes.PREDICTED_THERAPEUTIC_IMPLICATION}"),
}
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")
_PATIENT_FIELDS = ("subject", "patient")  # Observation/MedicationRequest.subject, DSTU2 MedicationOrder.patient


class DataUnavailable(Exception):
    """Required data is neither prefetched nor obtainable from the FHIR server (answer 412)."""


@dataclass
class PatientData:
    """FHIR resources about the patient, and where each prefetch key's data came from."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # key -> prefetch | fetched | none | unavailable

    @property
    def has_pgx(self) -> bool:
        return self.origin.get("pgx") in ("prefetch", "fetched")


def resolve(template: str, context: Mapping[str, Any]) -> str:
    """The FHIR query of ``template`` for this hook context (URL-encoded context values)."""
    def value(match: re.Match[str]) -> str:
        raw = context.get(match.group(1))
        if not isinstance(raw, str):
            raise DataUnavailable(f"prefetch template needs context.{match.group(1)}")
        return quote(raw, safe="")

    return _TOKEN.sub(value, template)


def _about(resource: Mapping[str, Any], patient_id: str) -> bool:
    """False for a resource that names another patient (never mix patients' data)."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id") in (None, patient_id)
    for name in _PATIENT_FIELDS:
        ref = reference(resource.get(name))
        if ref is not None:
            kind, target = reference_target(ref)
            return kind != "Patient" or target == patient_id
    return True


def _resources(value: Any) -> list[dict[str, Any]] | None:
    """Resources of a prefetch value or FHIR response (None when it reports an error)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return None
    kind = value.get("resourceType")
    if kind == "OperationOutcome":
        return None
    if kind == "Bundle":
        found = (as_dict(entry).get("resource") for entry in as_list(value.get("entry")))
        return [dict(r) for r in found if isinstance(r, dict) and isinstance(r.get("resourceType"), str)
                and r["resourceType"] != "OperationOutcome"]
    return [dict(value)] if isinstance(kind, str) else None


def _fetch(client: httpx.Client, base: str, query: str, headers: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """GET ``query`` on the FHIR server: resources, [] when there is none, None when unavailable."""
    try:
        response = client.get(f"{base.rstrip('/')}/{query}", headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code in (404, 410) and "?" not in query:
        return []  # a read of a resource that does not exist: no data
    if response.status_code != 200:
        return None
    try:
        return _resources(response.json())
    except ValueError:
        return None


def fhir_client(timeout_s: float) -> httpx.Client:
    """The client of an application's outbound FHIR calls (one per application, its connections
    kept alive between calls): ``timeout_s`` on connecting and on each read, no redirects."""
    return httpx.Client(timeout=timeout_s, follow_redirects=False, headers={"Accept": "application/fhir+json"})


def gather(keys: Iterable[str], required: Iterable[str], *, patient_id: str, context: Mapping[str, Any],
           prefetch: Mapping[str, Any] | None, fhir_server: str | None, access_token: str | None,
           client: httpx.Client) -> PatientData:
    """The data of ``keys``: prefetched, else fetched with ``client`` (in parallel); 412 when a
    ``required`` one is missing."""
    data = PatientData()
    missing: list[str] = []
    for key in keys:
        if prefetch is not None and key in prefetch:
            found = _resources(prefetch[key])
            data.origin[key] = "unavailable" if found is None else ("prefetch" if found else "none")
            data.resources.extend(found or [])
        else:
            missing.append(key)
    if missing and fhir_server:
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        queries = [resolve(TEMPLATES[key], context) for key in missing]
        with ThreadPoolExecutor(max_workers=len(missing)) as pool:
            results = list(pool.map(lambda q: _fetch(client, fhir_server, q, headers), queries))
        for key, found in zip(missing, results):
            data.origin[key] = "unavailable" if found is None else ("fetched" if found else "none")
            data.resources.extend(found or [])
    else:
        for key in missing:
            data.origin[key] = "unavailable"
    lacking = [key for key in required if data.origin.get(key) == "unavailable"]
    if lacking:
        where = "the request's prefetch or the FHIR server" if fhir_server else "the request's prefetch (no fhirServer given)"
        raise DataUnavailable(f"prefetch {', '.join(lacking)} could not be obtained from {where}")
    data.resources = [r for r in data.resources if _about(r, patient_id)]
    return data
