"""FHIR R4 resources -> twin facts, leniently: what a set of resources says about one patient, in
the twin's terms, and what was skipped and why.

``facts_from_resources(resources: Iterable[dict | Located], *, patient_id: str | None = None)
-> ImportedFacts`` is the one parser of the Bundle import (:mod:`.bundle_import`) and of CDS Hooks
prefetch.  A medication's drug, dose and interval are read by :mod:`.medication`, as CDS Hooks draft
orders are.  Nothing here touches the store.  What is read is listed in :mod:`.bundle_import`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ...errors import PgxInputError
from ...knowledge.drugs import UnknownDrug, perpetrators, resolve_drug
from ...twin.state import FHIR_ID_PATTERN, Event, InvalidEventError, ObservationRecorded, convert, parse_event
from . import codes
from .fhirjson import (
    Located,
    as_dict,
    as_list,
    as_str,
    coded,
    codings,
    components,
    effective,
    has_code,
    parse_datetime,
    quantity,
    reference,
    reference_target,
    texts,
)
from .genotypes import (
    GenotypeCall,
    GenotypeError,
    gene_result,
    gene_studied,
    implication_terms,
    leading_gene,
    parse_genotype,
    phenotype_term,
)
from .medication import MedicationRegimen, medication_concept, read_medication, recognise

__all__ = ["DoseFact", "Fact", "ImportedFacts", "Note", "drug_name", "facts_from_resources", "record_id"]

Severity = Literal["information", "warning"]
_OBSERVATION_OK = {"final", "amended", "corrected"}
_MEDICATION_CURRENT = {"active", "on-hold", "intended"}
_MEDICATION_ENDED = {"completed", "stopped"}
_NOT_ORDERS = {"proposal", "plan", "directive"}
_FHIR_ID = re.compile(FHIR_ID_PATTERN)
_DURATION_PREFIX = re.compile(r"^\s*\d+\s*HR\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Note:
    """Something skipped or assumed, and why; ``source`` names the resource (``Observation/abc``)."""

    source: str
    message: str
    severity: Severity = "information"


@dataclass(frozen=True)
class Fact:
    """A twin event read from a resource."""

    source: str
    event: Event


@dataclass(frozen=True)
class DoseFact:
    """An administered dose; its medication is found in the twin or the Bundle when planning."""

    source: str
    dose_id: str
    drug: str
    time: datetime
    amount_mg: float
    route: str | None
    duration_h: float
    request_id: str | None


@dataclass
class ImportedFacts:
    """What a set of resources says about one patient, in the twin's terms."""

    patient_id: str | None
    demographics: list[Fact] = field(default_factory=list)
    genotypes: list[Fact] = field(default_factory=list)
    covariates: list[Fact] = field(default_factory=list)
    medications: list[Fact] = field(default_factory=list)
    doses: list[DoseFact] = field(default_factory=list)
    stops: list[Fact] = field(default_factory=list)
    observations: list[Fact] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def ordered(self) -> list[Fact | DoseFact]:
        """Facts in the order they can be applied: who, genotype, covariates, medications, doses, stops, levels."""
        return [*self.demographics, *self.genotypes, *sorted(self.covariates, key=_when),
                *sorted(self.medications, key=_when), *sorted(self.doses, key=lambda d: d.time),
                *sorted(self.stops, key=_when), *sorted(self.observations, key=_when)]


def _when(fact: Fact) -> datetime:
    event: Any = fact.event
    return event.observation.time if isinstance(event, ObservationRecorded) else event.time


# ---------------------------------------------------------------------------------------------
# ids and patients


def record_id(item: Located) -> str:
    """The twin id of an entry made from ``item``: ``fhir-<Type>-<id>`` (hashed when too long or
    when the resource has no id), stable across imports."""
    if item.id and _FHIR_ID.match(item.id) and len(item.type) + len(item.id) <= 58:
        return f"fhir-{item.type}-{item.id}"
    basis = item.full_url or json.dumps(item.resource, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{item.type}|{item.id}|{basis}".encode()).hexdigest()[:20]
    return f"fhir-{item.type[:30]}-{digest}"


@dataclass
class _Patient:
    patient_id: str | None
    ids: set[str]
    aliases: set[str]

    def owns(self, ref: str | None) -> bool:
        if ref is None or ref in self.aliases:
            return True
        kind, target = reference_target(ref)
        return kind == "Patient" and target in self.ids


def _patient_id(item: Located) -> str | None:
    """Patient.id, else the id its fullUrl carries (``urn:uuid:<id>`` in transaction Bundles)."""
    if item.id:
        return item.id
    tail = item.full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1] if item.full_url else None
    return tail if tail and _FHIR_ID.match(tail) else None


def _find_patient(items: list[Located], given: str | None) -> _Patient:
    patients = [i for i in items if i.type == "Patient"]
    ids = {pid for i in patients if (pid := _patient_id(i))}
    if len(ids) > 1:
        raise PgxInputError(f"the resources describe {len(ids)} patients ({', '.join(sorted(ids))}); "
                            "import one patient at a time")
    aliases = {f"Patient/{i}" for i in ids} | {p.full_url for p in patients if p.full_url}
    if not ids:
        named = {reference_target(ref)[1] for i in items if (ref := _subject(i.resource))
                 and reference_target(ref)[0] == "Patient"}
        if len(named) > 1 and given is None:
            raise PgxInputError(f"the resources refer to {len(named)} patients ({', '.join(sorted(named))}) and "
                                "hold no Patient resource; import one patient at a time")
        ids = named if len(named) == 1 else set()
        aliases |= {f"Patient/{i}" for i in ids}
    found = next(iter(ids)) if len(ids) == 1 else None
    if given is not None:
        ids.add(given)
        aliases.add(f"Patient/{given}")
    return _Patient(given or found, ids, aliases)


def _subject(resource: dict[str, Any]) -> str | None:
    for key in ("subject", "patient", "for"):
        ref = reference(resource.get(key))
        if ref:
            return ref
    return None


# ---------------------------------------------------------------------------------------------
# the parser


def facts_from_resources(resources: Iterable[dict[str, Any] | Located], *, patient_id: str | None = None) -> ImportedFacts:
    """Read ``resources`` into twin facts (see the module docstring); never raises for a malformed
    resource (it is skipped with a reason), only :class:`PgxInputError` for several patients."""
    items = [r if isinstance(r, Located) else Located(r, f"resource[{i}]")
             for i, r in enumerate(resources) if isinstance(r, Located) or (isinstance(r, dict) and r.get("resourceType"))]
    patient = _find_patient(items, patient_id)
    reader = _Reader(ImportedFacts(patient.patient_id), patient, items)
    reader.read_all()
    return reader.facts


class _Reader:
    def __init__(self, facts: ImportedFacts, patient: _Patient, items: list[Located]) -> None:
        self.facts = facts
        self.patient = patient
        self.items = items
        self.by_ref: dict[str, Located] = {}
        for item in items:
            if item.id:
                self.by_ref[f"{item.type}/{item.id}"] = item
            if item.full_url:
                self.by_ref[item.full_url] = item
        # genotype and phenotype reports per gene, reconciled after all resources are read
        self.genotype_calls: dict[str, list[tuple[str, GenotypeCall, datetime | None]]] = {}
        self.phenotype_reports: dict[str, list[tuple[str, str]]] = {}
        self.gene_of_observation: dict[str, str] = {}
        self.haplotypes: list[tuple[str, str | None]] = []

    # --- plumbing
    def skip(self, item: Located | str, message: str, severity: Severity = "information") -> None:
        source = item if isinstance(item, str) else item.label
        self.facts.skipped.append(Note(source, message, severity))

    def note(self, item: Located | str, message: str, severity: Severity = "information") -> None:
        source = item if isinstance(item, str) else item.label
        self.facts.notes.append(Note(source, message, severity))

    def event(self, item: Located | str, data: dict[str, Any]) -> Event | None:
        try:
            return parse_event(data)
        except InvalidEventError as exc:
            self.skip(item, str(exc).removeprefix("invalid event: "), "warning")
            return None

    def resolve(self, ref: str | None) -> Located | None:
        if ref is None:
            return None
        if ref in self.by_ref:
            return self.by_ref[ref]
        kind, target = reference_target(ref)
        return self.by_ref.get(f"{kind}/{target}") if kind else None

    # --- dispatch
    def read_all(self) -> None:
        readers = {
            "Patient": self.patient_resource, "Observation": self.observation,
            "MedicationRequest": self.medication, "MedicationStatement": self.medication,
            "MedicationAdministration": self.administration,
        }
        # genotype Observations first: implications refer to them through derivedFrom
        ordered = sorted(self.items, key=lambda i: 0 if _is_genomic(i.resource, codes.GENOTYPE) else 1)
        for item in ordered:
            read = readers.get(item.type)
            if read is None:
                self.skip(item, f"{item.type} resources are not read by pgxtwin")
                continue
            if item.type != "Patient" and not self.patient.owns(_subject(item.resource)):
                self.skip(item, f"its subject {_subject(item.resource)} is not the patient "
                                f"{self.patient.patient_id}", "warning")
                continue
            read(item)
        self.reconcile_genotypes()

    # --- Patient
    def patient_resource(self, item: Located) -> None:
        r = item.resource
        data: dict[str, Any] = {"type": "demographics_set"}
        gender = as_str(r.get("gender"))
        if gender in ("male", "female"):
            data["sex"] = "M" if gender == "male" else "F"
        elif gender is not None:
            self.note(item, f"gender {gender!r} is not used for the sex-specific renal equations")
        born, _ = parse_datetime(r.get("birthDate"))
        if born is not None:
            data["birth_date"] = born.date().isoformat()
        elif r.get("birthDate") is not None:
            self.note(item, f"birthDate {r.get('birthDate')!r} is not a full date: age left unknown", "warning")
        if len(data) == 1:
            return
        event = self.event(item, data)
        if event is not None:
            self.facts.demographics.append(Fact(item.label, event))

    # --- Observation
    def observation(self, item: Located) -> None:
        r = item.resource
        status = as_str(r.get("status"))
        if status is not None and status not in _OBSERVATION_OK:
            self.skip(item, f"Observation status {status!r} (only final, amended and corrected results are read)")
            return
        code = r.get("code")
        if _is_genomic(r, codes.GENOTYPE):
            self.genotype(item)
        elif _is_implication(r):
            self.implication(item)
        elif has_code(code, codes.HAPLOTYPE, codes.LOINC):
            self.haplotypes.append((item.label, gene_studied(r)))
        elif has_code(code, codes.VARIANT, codes.LOINC):
            self.skip(item, "variant Observations are not read: the twin takes genotypes (84413-4)")
        elif (c := coded(code, codes.COVARIATE_CODES, codes.LOINC)) is not None:
            self.covariate(item, codes.COVARIATE_CODES[c])
        elif (c := coded(code, codes.EGFR_CODES, codes.LOINC)) is not None:
            self.egfr(item, c)
        elif (c := coded(code, codes.DRUG_LEVEL_CODES, codes.LOINC)) is not None:
            self.level(item, codes.DRUG_LEVEL_CODES[c][0])
        else:
            shown = ", ".join(texts(code)[:2]) or "none"
            self.skip(item, f"Observation code {shown} is not one pgxtwin reads")

    def _value(self, item: Located) -> tuple[Any, datetime, bool] | None:
        q = quantity(item.resource.get("valueQuantity"))
        if q is None:
            self.skip(item, "no valueQuantity with a number and a unit", "warning")
            return None
        when, has_time = effective(item.resource)
        if when is None:
            self.skip(item, "no effective date (effective[x] or issued)", "warning")
            return None
        return q, when, has_time

    def covariate(self, item: Located, name: str) -> None:
        found = self._value(item)
        if found is None:
            return
        q, when, _ = found
        if q.comparator:
            self.skip(item, f"{name} given as a bound ({q.comparator} {q.value:g}), not a value", "warning")
            return
        event = self.event(item, {"type": "covariate_recorded", "covariate": name, "value": q.value,
                                  "unit": codes.UCUM_TO_PINT.get(q.unit, q.unit), "time": when.isoformat()})
        if event is not None:
            self.facts.covariates.append(Fact(item.label, event))

    def egfr(self, item: Located, code: str) -> None:
        found = self._value(item)
        if found is None:
            return
        q, when, _ = found
        event = self.event(item, {"type": "observation_recorded", "observation": {
            "kind": "lab", "observation_id": record_id(item), "name": codes.EGFR_CODES[code], "time": when.isoformat(),
            "value": q.value, "unit": q.unit, "code": code}})
        if event is not None:
            self.facts.observations.append(Fact(item.label, event))

    def level(self, item: Located, drug: str) -> None:
        found = self._value(item)
        if found is None:
            return
        q, when, has_time = found
        if not has_time:
            self.skip(item, f"{drug} level dated without a time of day: it cannot be placed against the doses",
                      "warning")
            return
        observation: dict[str, Any] = {"kind": "concentration", "observation_id": record_id(item), "drug": drug,
                                       "time": when.isoformat(), "unit": codes.UCUM_TO_PINT.get(q.unit, q.unit)}
        if q.comparator in ("<", "<="):
            observation |= {"blq": True, "lloq": q.value}
        elif q.comparator:
            self.skip(item, f"{drug} level above the reportable range ({q.comparator} {q.value:g} {q.unit})", "warning")
            return
        else:
            observation["value"] = q.value
        event = self.event(item, {"type": "observation_recorded", "observation": observation})
        if event is not None:
            self.facts.observations.append(Fact(item.label, event))

    # --- genomics
    def genotype(self, item: Located) -> None:
        r = item.resource
        candidates = [*texts(r.get("valueCodeableConcept"))]
        if as_str(r.get("valueString")):
            candidates.append(str(as_str(r.get("valueString"))))
        gene = gene_studied(r) or next((g for t in candidates if (g := leading_gene(t))), None)
        if gene is None:
            shown = ", ".join(texts(c.get("valueCodeableConcept"))[0] for c in components(r, codes.GENE_STUDIED)
                              if texts(c.get("valueCodeableConcept"))) or "none given"
            self.skip(item, f"genotype of a gene the knowledge base does not know ({shown})", "warning")
            return
        if item.id:
            self.gene_of_observation[f"Observation/{item.id}"] = gene
        errors: list[str] = []
        for text in candidates:
            try:
                call = parse_genotype(gene, text)
            except GenotypeError as exc:
                errors.append(str(exc))
                continue
            self.genotype_calls.setdefault(gene, []).append((item.label, call, effective(r)[0]))
            return
        reason = errors[0] if errors else f"{gene}: no genotype value (valueCodeableConcept or valueString)"
        self.skip(item, reason, "warning")

    def implication(self, item: Located) -> None:
        r = item.resource
        values = [t for c in (*components(r, codes.THERAPEUTIC_IMPLICATION),
                              *components(r, codes.PREDICTED_THERAPEUTIC_IMPLICATION),
                              *components(r, codes.EFFECT_MEDICATION_METABOLISM, codes.LOINC))
                  for t in implication_terms(c)]
        drug = next((t for c in components(r, codes.MEDICATION_ASSESSED) for t in texts(c.get("valueCodeableConcept"))
                     if not t.isdigit()), None)
        about = f" for {drug.lower()}" if drug else ""
        if not values:
            self.skip(item, f"therapeutic implication{about} without an implication value", "warning")
            return
        genes = [g for g in (gene_studied(r),
                             *(self.gene_of_observation.get(ref or "") or self._gene_of(ref)
                               for ref in (reference(d) for d in as_list(r.get("derivedFrom")))),
                             *(leading_gene(v) for v in values)) if g]
        found = {(g, term) for g in dict.fromkeys(genes) for v in values if (term := phenotype_term(g, v))}
        if len(found) == 1:
            gene, term = next(iter(found))
            self.phenotype_reports.setdefault(gene, []).append((item.label, term))
            return
        shown = " / ".join({codes.IMPLICATION_ANSWERS.get(v, v).lower(): codes.IMPLICATION_ANSWERS.get(v, v)
                            for v in values}.values())
        if not genes:
            self.skip(item, f"implication {shown!r}{about} names no gene: no gene-studied component, and the "
                            "genotype it derives from is not among the resources", "warning")
        elif not found:
            self.skip(item, f"implication {shown!r}{about} is not a phenotype of {', '.join(dict.fromkeys(genes))} "
                            "the knowledge base knows (HLA risks are derived from the allele itself)")
        else:
            self.skip(item, f"implication {shown!r}{about} fits more than one gene "
                            f"({', '.join(sorted(g for g, _ in found))})", "warning")

    def _gene_of(self, ref: str | None) -> str | None:
        found = self.resolve(ref)
        return gene_studied(found.resource) if found is not None else None

    def reconcile_genotypes(self) -> None:
        genes = dict.fromkeys([*self.genotype_calls, *self.phenotype_reports])
        for gene in genes:
            calls = self.genotype_calls.get(gene, [])
            reports = self.phenotype_reports.get(gene, [])
            distinct = {(c.diplotype, c.carried) for _, c, _ in calls}
            if len(distinct) > 1:
                for source, call, _ in calls:
                    self.skip(source, f"{gene}: genotypes disagree within the resources "
                                      f"({', '.join(sorted(str(c.reported) for _, c, _ in calls))})", "warning")
                continue
            call = calls[0][1] if calls else None
            terms = {t for _, t in reports}
            if call is not None and call.diplotype is not None:
                source, _, when = calls[0]
                result = gene_result(call, None, f"FHIR {source}")
                for report_source, term in reports:
                    if term == result.phenotype:
                        self.note(report_source, f"{gene} {term}: agrees with the genotype {call.diplotype}")
                    else:
                        self.note(report_source, f"{gene}: reported {term!r}, the knowledge base derives "
                                                 f"{result.phenotype!r} from {call.diplotype}; the twin keeps "
                                                 f"{result.phenotype!r}", "warning")
            elif len(terms) > 1:
                for source, term in reports:
                    self.skip(source, f"{gene}: phenotypes disagree within the resources ({', '.join(sorted(terms))})",
                              "warning")
                continue
            else:
                source, when = (calls[0][0], calls[0][2]) if calls else (reports[0][0], None)
                result = gene_result(call or GenotypeCall(gene, None), next(iter(terms), None), f"FHIR {source}")
                for report_source, term in reports[1 if not calls else 0:]:
                    self.note(report_source, f"{gene} {term}: same phenotype as {source}")
            data: dict[str, Any] = {"type": "outside_call_set", "gene": gene, "result": result.model_dump(mode="json")}
            if when is not None:
                data["recorded_at"] = when.isoformat()
            event = self.event(source, data)
            if event is not None:
                self.facts.genotypes.append(Fact(source, event))
        for source, gene in self.haplotypes:
            if gene and gene in self.genotype_calls:
                self.skip(source, f"haplotype of {gene}: the genotype Observation of {gene} is read instead")
            else:
                self.skip(source, "a haplotype alone is not a diplotype: the twin reads genotypes (84413-4)")

    # --- medications
    def medication(self, item: Located) -> None:
        r = item.resource
        status = as_str(r.get("status"))
        intent = as_str(r.get("intent"))
        if intent in _NOT_ORDERS:
            self.skip(item, f"{item.type} intent {intent!r}: not a prescription")
            return
        if status not in _MEDICATION_CURRENT | _MEDICATION_ENDED:
            self.skip(item, f"{item.type} status {status!r}: neither current nor completed")
            return
        concept = self.concept_of(r)
        drug = concept_drug(concept)
        if drug is None:
            self.skip(item, f"{item.type} names no drug (RxNorm code or text)", "warning")
            return
        dosage = as_dict(next(iter(as_list(r.get("dosageInstruction") or r.get("dosage"))), {}))
        bounds = as_dict(as_dict(as_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod"))
        period = as_dict(r.get("effectivePeriod"))
        start = next((t for t in (parse_datetime(r.get("authoredOn"))[0], parse_datetime(r.get("effectiveDateTime"))[0],
                                  parse_datetime(period.get("start"))[0], parse_datetime(bounds.get("start"))[0],
                                  parse_datetime(r.get("dateAsserted"))[0]) if t is not None), None)
        if start is None:
            self.skip(item, f"{drug}: no start date (authoredOn, effective[x] or dosage bounds)", "warning")
            return
        end = None
        if status in _MEDICATION_ENDED:
            end = next((t for t in (parse_datetime(period.get("end"))[0], parse_datetime(bounds.get("end"))[0],
                                    parse_datetime(as_dict(as_dict(r.get("dispenseRequest")).get("validityPeriod"))
                                                   .get("end"))[0]) if t is not None), None)
            if end is None:
                self.skip(item, f"{drug}: status {status} without an end date, so not a current medication "
                                "and its period is unknown")
                return
        route = self.route(item, dosage, drug)
        if route is None:
            return
        data: dict[str, Any] = {"type": "medication_started", "medication_id": record_id(item), "drug": drug,
                                "time": start.isoformat(), "route": route, "reason": f"FHIR {item.label}"}
        data |= self.regimen(item, read_medication(r, concept), drug)
        event = self.event(item, data)
        if event is None:
            return
        self.facts.medications.append(Fact(item.label, event))
        if end is not None:
            if end < start:
                self.skip(item, f"{drug}: ends ({end.isoformat()}) before it starts", "warning")
                return
            stop = self.event(item, {"type": "medication_stopped", "medication_id": record_id(item),
                                     "time": end.isoformat(), "reason": f"FHIR status {status}"})
            if stop is not None:
                self.facts.stops.append(Fact(item.label, stop))

    def concept_of(self, resource: dict[str, Any]) -> Any:
        """The medication's CodeableConcept, from the resource or the Medication it references."""
        concept = medication_concept(resource)
        if concept is None:
            medication = self.resolve(reference(resource.get("medicationReference")))
            concept = medication.resource.get("code") if medication is not None else None
        return concept

    def route(self, item: Located, dosage: dict[str, Any], drug: str) -> str | None:
        route = dosage.get("route")
        if not codings(route) and not as_str(as_dict(route).get("text")):
            return "oral"  # FHIR leaves it out for most tablets; the twin's default
        if coded(route, codes.ORAL_ROUTES, codes.SNOMED):
            return "oral"
        if coded(route, codes.INTRAVENOUS_ROUTES, codes.SNOMED):
            timing = as_dict(as_dict(dosage.get("timing")).get("repeat"))
            return "iv_infusion" if timing.get("duration") else "iv_bolus"
        self.skip(item, f"{drug}: route {', '.join(texts(route)) or '?'} is not modelled (oral and intravenous only)")
        return None

    def regimen(self, item: Located, read: MedicationRegimen, drug: str) -> dict[str, Any]:
        """``dose`` (mg) and ``interval_h`` of the first dosage, when it states them."""
        out: dict[str, Any] = {}
        if read.dose_mg is not None:
            out["dose"] = read.dose_mg
        else:
            q = quantity(as_dict(next(iter(as_list(read.dosage.get("doseAndRate"))), {})).get("doseQuantity"))
            if q is not None:
                self.note(item, f"{drug}: dose {q.value:g} {q.unit} is not a mass (nor a count or volume of a "
                                "product of known strength); regimen kept without a dose")
        if read.interval_h is not None:
            out["interval_h"] = read.interval_h
        return out

    def administration(self, item: Located) -> None:
        r = item.resource
        status = as_str(r.get("status"))
        if status not in (None, "completed"):
            self.skip(item, f"MedicationAdministration status {status!r}: not a completed dose")
            return
        drug = concept_drug(self.concept_of(r))
        if drug is None:
            self.skip(item, "MedicationAdministration names no drug (RxNorm code or text)", "warning")
            return
        when, has_time = effective(r)
        if when is None or not has_time:
            self.skip(item, f"{drug}: dose without a date and time of day", "warning")
            return
        dosage = as_dict(r.get("dosage"))
        q = quantity(dosage.get("dose"))
        try:
            amount = convert(q.value, codes.UCUM_TO_PINT.get(q.unit, q.unit), "mg", "dose") if q else None
        except ValueError:
            amount = None
        if amount is None or amount < 0:
            self.skip(item, f"{drug}: no dose as a mass (dosage.dose)", "warning")
            return
        route = self.route(item, dosage, drug)
        if route is None:
            return
        period = as_dict(r.get("effectivePeriod"))
        ended = parse_datetime(period.get("end"))[0]
        duration = (ended - when).total_seconds() / 3600.0 if ended is not None and ended > when else 0.0
        if route.startswith("iv"):
            route = "iv_infusion" if duration > 0 else "iv_bolus"
        request = self.resolve(reference(r.get("request")))
        self.facts.doses.append(DoseFact(item.label, record_id(item), drug, when, amount, route,
                                         duration if route == "iv_infusion" else 0.0,
                                         record_id(request) if request is not None else None))


def concept_drug(concept: Any) -> str | None:
    """The drug of a medication concept: the first recognised by :func:`.medication.recognise` (RxNorm
    code, else a known name in its texts), else the name its text starts with (:func:`drug_name`:
    a co-medication the drug library does not model still counts for interactions)."""
    drugs = recognise(concept)
    if drugs:
        return drugs[0]
    for text in texts(concept):
        name = drug_name(text)
        if name is not None:
            return name
    return None


def _is_genomic(resource: dict[str, Any], code: str) -> bool:
    return resource.get("resourceType") == "Observation" and has_code(resource.get("code"), code, codes.LOINC)


def _is_implication(resource: dict[str, Any]) -> bool:
    code = resource.get("code")
    profiles = as_list(as_dict(resource.get("meta")).get("profile"))
    return (has_code(code, codes.THERAPEUTIC_IMPLICATION) or has_code(code, codes.PREDICTED_THERAPEUTIC_IMPLICATION)
            or codes.PROFILE_THERAPEUTIC_IMPLICATION in profiles)


def drug_name(text: str) -> str | None:
    """The drug a medication text names: ``Hydrochlorothiazide 25 MG`` -> hydrochlorothiazide,
    ``Diazepam [Valium]`` -> diazepam, ``Prograf 1 MG`` -> tacrolimus (library synonyms).

    The words before the first one with a digit, brackets removed, lower-cased: the library's
    name when any leading run of them is a library drug or synonym, or a co-medication the
    interaction table knows; else the whole run."""
    words: list[str] = []
    text = _DURATION_PREFIX.sub("", text)  # Synthea: "24 HR Metformin hydrochloride 500 MG ..."
    for word in re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text).split():
        if any(ch.isdigit() for ch in word) or word in ("/", "+"):
            break
        words.append(word.lower())
    if not words:
        return None
    known = {p.drug.lower() for p in perpetrators()}
    for n in range(len(words), 0, -1):
        candidate = " ".join(words[:n])
        try:
            return resolve_drug(candidate)
        except UnknownDrug:
            if candidate in known:
                return candidate
    return " ".join(words)
