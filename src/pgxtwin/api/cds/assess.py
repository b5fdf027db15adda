"""What the twin says about a drug order or a chart, for the CDS services.

The verdict of an order is the twin's own prescription evaluation (:func:`pgxtwin.twin.evaluate.
evaluate_prescription`, fed as ``pgxtwin twin evaluate`` feeds it: the individual posterior when
drug levels are known).  A twin at a given version never changes, so an evaluation is cached per
(patient, twin version or digest of the EHR facts, drug, dose, interval, day) and computed once
even when many requests ask for it at the same time; the individual posterior behind it is
estimated once per (patient, version or digest, drug, day), not once per dose asked about.  The day is part of the key because age and
the covariates in effect move with the date.

Where a gene's FDA label status in CPIC's gene-drug table (pypgx ``cpic-table.csv``, column
``FDALabel``, PharmGKB's label annotation) is "Testing required" or "Testing recommended" and the
patient has no result for it, the assessment says so (an info card suggests testing).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import TypeVar

import numpy as np

from ...errors import PgxInputError
from ...knowledge.drugs import UnknownDrug, load_drug
from ...knowledge.guidelines import Guideline, HlaRule, guidelines_for, hla_rules, hla_risks, recommendation
from ...knowledge.tables import read_table
from ...pk.drug_model import UNKNOWN_PHENOTYPES
from ...twin.evaluate import Evaluation, evaluate_prescription
from ...twin.state import TwinState
from ...twin.workflow import factors, hla_typing, individualise

__all__ = ["AssessmentCache", "DrugAssessment", "GeneFinding", "Subject", "TestingAdvice", "assess_drug",
           "chart_findings"]

TESTING_LABELS = ("Testing required", "Testing recommended")
ACTIONABLE = ("avoid", "adjust_dose")
T = TypeVar("T")


@dataclass(frozen=True)
class Subject:
    """Whose data a service reads: the twin at one version, or facts from the EHR (no twin)."""

    state: TwinState
    identity: str                    # "twin:<version>" or "ehr:<sha256 of the facts>"
    medications: tuple[str, ...]     # current medications (drug names)

    @property
    def from_twin(self) -> bool:
        return self.identity.startswith("twin:")


@dataclass(frozen=True)
class TestingAdvice:
    gene: str
    fda_label: str                   # "Testing required" | "Testing recommended"
    guideline: Guideline | None


@dataclass(frozen=True)
class DrugAssessment:
    evaluation: Evaluation
    notes: tuple[str, ...]           # how the regimen was read, individualisation
    testing: tuple[TestingAdvice, ...]
    hla: tuple[HlaRule, ...] = ()    # genotype-only HLA risks that fire for this drug


@dataclass(frozen=True)
class GeneFinding:
    """One actionable result of the chart: a gene's result and the drugs whose guidance it changes."""

    gene: str
    result: str                      # phenotype, or "*57:01 carrier" for HLA
    drugs: tuple[tuple[str, str], ...]   # (drug, action: avoid | adjust_dose)


class AssessmentCache:
    """Bounded LRU of computed values; one computation per key at a time (others wait for it)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]  # type: ignore[return-value]
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._values:
                    return self._values[key]  # type: ignore[return-value]
            try:
                value = compute()
            except BaseException:
                with self._lock:
                    self._inflight.pop(key, None)  # a failure is not kept: the next call computes again
                raise
            with self._lock:
                self._values[key] = value
                while len(self._values) > self._max:
                    self._values.popitem(last=False)
                self._inflight.pop(key, None)
        return value


@lru_cache(maxsize=1)
def _fda_labels() -> dict[tuple[str, str], str]:
    """(drug, gene) -> FDA label testing status, from CPIC's gene-drug table."""
    return {(r["Drug"].lower(), r["Gene"]): r["FDALabel"] for r in read_table("cpic-table.csv")
            if r["FDALabel"] in TESTING_LABELS}


def has_result(state: TwinState, gene: str) -> bool:
    """Whether the patient has a usable result for ``gene`` (a diplotype or a known phenotype)."""
    result = state.genotype.genes.get(gene)
    if result is None or result.status == "no_call":
        return False
    return bool(result.diplotypes) or result.phenotype not in UNKNOWN_PHENOTYPES


def testing_advice(state: TwinState, drug: str) -> tuple[TestingAdvice, ...]:
    """Genes whose testing the FDA label requires or recommends for ``drug`` and that are not typed."""
    out = []
    for (name, gene), label in sorted(_fda_labels().items()):
        if name == drug and not has_result(state, gene):
            guideline = next((g for g in guidelines_for(drug) if g.gene == gene), None)
            out.append(TestingAdvice(gene, label, guideline))
    return tuple(out)


def _regimen(drug: str, dose_mg: float | None, interval_h: float | None) -> tuple[str, float, list[str]]:
    """Dose text and interval to evaluate, with a note for what the order did not say."""
    try:
        standard = load_drug(drug).dosing.standard
    except UnknownDrug:
        return "0 mg", interval_h or 24.0, []  # not simulated: genotype-based guidance only
    notes = []
    if dose_mg is None:
        notes.append(f"the order's dose is not stated in mg: evaluated at the labelled standard dose {standard.dose}")
    if interval_h is None:
        notes.append(f"the order's interval is not stated: evaluated every {standard.interval_h:g} h (labelled)")
    return (standard.dose if dose_mg is None else f"{dose_mg:g} mg"), interval_h or standard.interval_h, notes


def _individual(cache: AssessmentCache, patient_id: str, subject: Subject,
                drug: str) -> tuple[tuple[str, ...], dict[str, np.ndarray] | None]:
    """Notes and individual parameter draws of ``drug`` from the subject's levels (None without
    levels), as :func:`pgxtwin.twin.workflow.evaluations` makes them: estimated once per (patient,
    twin version or EHR facts, drug, day), whatever the doses asked about."""
    def compute() -> tuple[tuple[str, ...], dict[str, np.ndarray] | None]:
        posterior = individualise(subject.state, drug)
        if posterior is None:
            return (), None
        return (f"individualised from {posterior.n_observations} measured level(s)",), posterior.parameter_draws(300)

    return cache.get(("posterior", patient_id, subject.identity, drug, _today()), compute)


def _evaluate(cache: AssessmentCache, patient_id: str, subject: Subject, drug: str, dose: str,
              tau: float) -> tuple[Evaluation, list[str]]:
    # The twin's evaluation as `pgxtwin twin evaluate` runs it (posterior from levels when known).
    notes, draws = _individual(cache, patient_id, subject, drug)
    state = subject.state
    evaluation = evaluate_prescription(drug, dose, tau, factors(state, drug), hla=hla_typing(state),
                                       parameter_draws=None if draws is None else {k: v.copy() for k, v in draws.items()})
    return evaluation, list(notes)


def assess_drug(cache: AssessmentCache, patient_id: str, subject: Subject, drug: str, dose_mg: float | None,
                interval_h: float | None) -> DrugAssessment:
    """The twin's assessment of ``drug`` at this regimen (cached; see the module docstring)."""
    dose_key = None if dose_mg is None else round(dose_mg, 6)
    tau_key = None if interval_h is None else round(interval_h, 6)
    key = ("drug", patient_id, subject.identity, drug, dose_key, tau_key, _today())

    def compute() -> DrugAssessment:
        dose, tau, notes = _regimen(drug, dose_mg, interval_h)
        try:
            evaluation, more = _evaluate(cache, patient_id, subject, drug, dose, tau)
        except PgxInputError as exc:
            if dose_mg is not None:
                # e.g. an implausible ordered dose: say so, and evaluate the labelled regimen instead
                dose, tau, notes = _regimen(drug, None, interval_h)
                notes = [f"the ordered dose could not be assessed ({exc})", *notes[1:]]
            try:
                evaluation, more = _evaluate(cache, patient_id, subject, drug, dose, tau)
            except PgxInputError as exc:
                evaluation, more = _genotype_only(subject.state, drug, tau, str(exc)), []
        return DrugAssessment(evaluation, tuple(notes + more), testing_advice(subject.state, drug),
                              tuple(hla_risks(drug, hla_typing(subject.state))))

    return cache.get(key, compute)


def _genotype_only(state: TwinState, drug: str, interval_h: float, why: str) -> Evaluation:
    """CPIC guidance and HLA risks alone, when the drug model cannot simulate this patient."""
    return evaluate_prescription(drug, "0 mg", interval_h, factors(state, drug), hla=hla_typing(state),
                                 not_simulated=why)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def chart_findings(cache: AssessmentCache, patient_id: str, subject: Subject) -> tuple[GeneFinding, ...]:
    """The patient's actionable results: per gene, the drugs whose CPIC guidance changes (avoid or
    adjust the dose); HLA alleles with a genotype-only risk."""
    key = ("chart", patient_id, subject.identity, _today())

    def compute() -> tuple[GeneFinding, ...]:
        state = subject.state
        phenotypes = {g: i.phenotype for g, i in state.gene_inputs().items()
                      if not g.startswith("HLA-") and i.phenotype not in UNKNOWN_PHENOTYPES}
        by_gene: dict[str, dict[str, str]] = {}
        # a normal result is not a finding ("Normal Metabolizer", "G6PD Normal", "Normal Function", ...)
        unusual = {g for g, p in phenotypes.items() if "Normal" not in p.split()}
        drugs = {r["Drug"].lower() for r in read_table("cpic-table.csv") if r["Gene"] in unusual}
        for drug in sorted(drugs):
            rec = recommendation(drug, phenotypes)
            if rec is not None and rec.action in ACTIONABLE:
                for gene in set(rec.phenotypes) & unusual:
                    by_gene.setdefault(gene, {})[drug] = rec.action
        findings = [GeneFinding(g, phenotypes[g], tuple(sorted(d.items()))) for g, d in sorted(by_gene.items())]
        hla = hla_typing(state)
        for rule in hla_rules():
            hit = [d for d in rule.drugs if rule in hla_risks(d, hla)]
            if hit:
                findings.append(GeneFinding(rule.gene, f"{rule.allele} carrier", tuple((d, "avoid") for d in hit)))
        return tuple(findings)

    return cache.get(key, compute)
