"""FHIR R4 resources -> twin facts -> twin events, leniently, with what was skipped and why.

One parser (:mod:`.resource_facts`) serves the Bundle import (``POST /fhir/Bundle``,
``pgxtwin import``) and CDS Hooks prefetch::

    facts = facts_from_resources(resources, patient_id=None)   # -> ImportedFacts (facts + skipped)
    plan = plan_import(facts, state)                           # -> ImportPlan: new events, applied in memory
    report = import_document(store, document, actor=..., entry_point=...)   # the whole import

``facts_from_resources(resources: Iterable[dict | Located], *, patient_id: str | None = None)
-> ImportedFacts`` takes plain resource dicts (a prefetch's Patient, Observations, MedicationRequests;
a searchset Bundle can be flattened with :func:`resources_in`) or :class:`Located` resources.
``plan_import(facts, TwinState.empty(pid)).state`` is the twin those resources alone describe.

What is read (everything else is reported as skipped, with the reason):

* Patient: sex (``gender`` male/female) and birth date.
* Observation: weight 29463-7, height 8302-2, creatinine 2160-0 / 38483-4, albumin 1751-7 (covariates,
  converted with pint: ``[lb_av]``, µmol/L creatinine, ...); eGFR (kept as a laboratory value); drug
  concentrations (tacrolimus 11253-2, ...) as levels in mg/L; genotype 84413-4 (gene in component
  48018-6) as an outside call whose phenotype the knowledge base derives; therapeutic implications
  (IG 3.0.0 ``therapeutic-implication``, the older ``predicted-therapeutic-implication`` and IG 1.x
  ``effect-medication-metabolism`` 53040-2 components) as the gene's phenotype when no genotype of
  that gene is given, else checked against it.
* MedicationRequest / MedicationStatement (RxNorm ingredient, else the drug name): a medication with
  its regimen when the dosage says it; MedicationAdministration: an administered dose.

Patient identity: the twin's ``patient_id`` is the FHIR ``Patient.id`` (the id CDS Hooks sends as
``context.patientId``), else the id of its ``fullUrl`` (``urn:uuid:<id>``); without a Patient
resource, the one patient the resources' subjects name.  ``pgxtwin import --patient-id`` overrides
it.  Resources about another patient are skipped with a warning; two patients are refused.
Idempotence: events carry ids derived from the resource (``fhir-<Type>-<id>``) and covariates,
demographics and genotypes are compared by value, so importing the same Bundle twice adds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import PgxInputError
from ...store.errors import UnknownTwinError
from ...store.repository import TwinStore
from ...twin.state import (
    FHIR_ID_PATTERN,
    DoseRecorded,
    Event,
    InvalidEventError,
    MedicationStarted,
    MedicationStopped,
    ObservationRecorded,
    OutsideCallSet,
    TwinState,
    apply,
)
from .fhirjson import Located, resources_in
from .resource_facts import (
    DoseFact,
    Fact,
    ImportedFacts,
    Note,
    facts_from_resources,
)

__all__ = [
    "Fact", "ImportPlan", "ImportReport", "ImportedFacts", "Located", "NoPatientError", "Note",
    "facts_from_resources", "import_document", "plan_import", "resources_in",
]

_FHIR_ID = re.compile(FHIR_ID_PATTERN)


class NoPatientError(PgxInputError):
    """The resources name no patient, so there is no twin to import into."""


# ---------------------------------------------------------------------------------------------
# planning against the twin


@dataclass
class ImportPlan:
    """The events new to the twin (in order, each with its source) and the twin after them."""

    state: TwinState
    events: list[tuple[str, Event]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)


def _same_call(a: Any, b: Any) -> bool:
    return (a.diplotypes, a.phenotype, a.detected_alleles) == (b.diplotypes, b.phenotype, b.detected_alleles)


def _already(state: TwinState, event: Event) -> str | None:
    """Why ``event`` adds nothing to ``state`` (None when it does)."""
    if event.type == "demographics_set":
        d = state.demographics
        if all(getattr(event, k) in (None, getattr(d, k)) for k in ("sex", "birth_date", "age_years")):
            return "already in the twin"
    elif isinstance(event, OutsideCallSet):
        known = state.genotype.genes.get(event.gene)
        if known is not None and _same_call(known, event.result):
            return "already in the twin"
        if known is not None and known.diplotypes and not event.result.diplotypes and not event.result.detected_alleles:
            return (f"the twin already has a {event.gene} diplotype ({known.diplotypes[0]}); "
                    "a reported phenotype does not replace it")
    elif event.type == "covariate_recorded":
        for rec in state.covariates:
            same_value = abs(rec.value - event.value) <= 1e-9 * max(1.0, abs(rec.value))
            if rec.covariate == event.covariate and rec.time == event.time and same_value:
                return "already in the twin"
    elif isinstance(event, MedicationStarted):
        if event.medication_id in state.medications:
            return "already in the twin"
    elif isinstance(event, MedicationStopped):
        med = state.medications.get(event.medication_id)
        if med is not None and med.stopped_at is not None:
            return "already in the twin"
    elif isinstance(event, ObservationRecorded):
        if any(o.observation_id == event.observation.observation_id for o in state.observations):
            return "already in the twin"
    elif isinstance(event, DoseRecorded):
        if any(d.dose_id == event.dose_id for m in state.medications.values() for d in m.doses):
            return "already in the twin"
    return None


def _dose_event(state: TwinState, fact: DoseFact) -> DoseRecorded | str:
    """The dose as an event on its medication (the one it was ordered by, else the one of the same
    drug running at that time), or why there is none."""
    if any(d.dose_id == fact.dose_id for m in state.medications.values() for d in m.doses):
        return "already in the twin"
    med = state.medications.get(fact.request_id or "")
    if med is None or med.drug != fact.drug:
        running = [m for m in state.medications.values() if m.drug == fact.drug and m.active_at(fact.time)]
        med = max(running, key=lambda m: m.started_at) if running else None
    if med is None:
        return (f"no {fact.drug} medication running at {fact.time.isoformat()} in the twin or the resources "
                "(import its MedicationRequest first)")
    return DoseRecorded(dose_id=fact.dose_id, medication_id=med.medication_id, time=fact.time, amount=fact.amount_mg,
                        route=None if fact.route == med.route else fact.route, duration_h=fact.duration_h)


def plan_import(facts: ImportedFacts, state: TwinState) -> ImportPlan:
    """Facts not yet in ``state``, each applied in memory; a fact the twin refuses is skipped with
    the twin's reason (the rest go on)."""
    plan = ImportPlan(state=state, skipped=list(facts.skipped))
    for fact in facts.ordered():
        if isinstance(fact, DoseFact):
            found = _dose_event(plan.state, fact)
            if isinstance(found, str):
                if found == "already in the twin":
                    plan.duplicates.append(fact.source)
                else:
                    plan.skipped.append(Note(fact.source, found, "warning"))
                continue
            event: Event = found
        else:
            event = fact.event
            why = _already(plan.state, event)
            if why is not None:
                if why == "already in the twin":
                    plan.duplicates.append(fact.source)
                else:
                    plan.skipped.append(Note(fact.source, why))
                continue
        try:
            plan.state = apply(plan.state, event)
        except InvalidEventError as exc:
            plan.skipped.append(Note(fact.source, str(exc), "warning"))
            continue
        plan.events.append((fact.source, event))
    return plan


# ---------------------------------------------------------------------------------------------
# the import


@dataclass
class ImportReport:
    """What one import did: the twin, its versions before and after, what was added, what not."""

    patient_id: str
    created: bool
    version_before: int
    version_after: int
    imported: list[tuple[str, str]]
    duplicates: list[str]
    skipped: list[Note]
    notes: list[Note]

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for _, kind in self.imported:
            kinds[kind] = kinds.get(kind, 0) + 1
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing new"
        created = " (twin created)" if self.created else ""
        return (f"twin {self.patient_id}{created}: imported {len(self.imported)} facts ({what}), version "
                f"{self.version_before} -> {self.version_after}; {len(self.duplicates)} already in the twin, "
                f"{len(self.skipped)} skipped")

    def grouped(self) -> list[Note]:
        """Warnings one by one; information grouped by message (with up to five sources named)."""
        out: list[Note] = []
        groups: dict[str, list[str]] = {}
        for note in [*self.skipped, *self.notes]:
            if note.severity == "warning":
                out.append(note)
            else:
                groups.setdefault(note.message, []).append(note.source)
        for message, sources in groups.items():
            named = ", ".join(sources[:5]) + (f" and {len(sources) - 5} more" if len(sources) > 5 else "")
            out.append(Note(named, f"{message} ({len(sources)})" if len(sources) > 1 else message))
        return out

    def operation_outcome(self) -> dict[str, Any]:
        """FHIR R4 OperationOutcome: the summary, then each warning and each group of information."""
        issues = [{"severity": "information", "code": "informational", "diagnostics": self.summary()}]
        for note in self.grouped():
            issues.append({"severity": note.severity, "code": "informational" if note.severity == "information"
                           else "processing", "diagnostics": f"{note.source}: {note.message}"})
        return {"resourceType": "OperationOutcome", "issue": issues}


def import_document(store: TwinStore, document: Any, *, actor: str | None = None, entry_point: str | None = None,
                    patient_id: str | None = None, require_bundle: bool = False,
                    authorize: Callable[[str], None] | None = None) -> ImportReport:
    """Import a FHIR Bundle (or Parameters, or one resource) into the patient's twin, creating the
    twin when absent.  Facts already in the twin are not added again.

    Every new event is checked against the twin in memory before anything is written, and each
    append expects the version the previous one made (the first: the version read here), so a
    concurrent writer makes the import stop with :class:`~pgxtwin.store.errors.ConcurrentWriteError`.
    ``authorize(patient_id)`` is called once the patient is known, before the store is read (the
    API's scope check).  Raises :class:`PgxInputError` for a document that is not FHIR (or not a
    Bundle with ``require_bundle``), :class:`NoPatientError` when it names no patient."""
    if require_bundle and (not isinstance(document, dict) or document.get("resourceType") != "Bundle"):
        found = document.get("resourceType") if isinstance(document, dict) else type(document).__name__
        raise PgxInputError(f"expected a FHIR Bundle, got {found!r}")
    facts = facts_from_resources(resources_in(document), patient_id=patient_id)
    pid = facts.patient_id
    if pid is None:
        raise NoPatientError("no patient: the resources hold no Patient and no subject reference names one")
    if not _FHIR_ID.match(pid):
        raise PgxInputError(f"Patient id {pid!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    if authorize is not None:
        authorize(pid)
    try:
        state = store.state_at(pid, actor=actor, entry_point=entry_point)
        created = False
    except UnknownTwinError:
        state, created = TwinState.empty(pid), True
    before = state.version
    plan = plan_import(facts, state)
    if plan.events:
        if created:
            state = store.create_twin(pid, actor=actor, entry_point=entry_point)
        state = store.append_all(pid, [e for _, e in plan.events], state.version, actor=actor,
                                 entry_point=entry_point)
    report = ImportReport(pid, created and bool(plan.events), before, state.version if plan.events else before,
                          [(s, e.type) for s, e in plan.events], plan.duplicates, plan.skipped, facts.notes)
    store.audit(pid, "fhir_import", actor=actor, entry_point=entry_point, version=report.version_after,
                detail=report.summary())
    return report
