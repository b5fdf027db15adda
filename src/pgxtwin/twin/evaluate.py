"""Evaluate a prescription for a patient: genotype-only risks, the CPIC recommendation, predicted
exposure against the target, and one verdict: ok, adjust_dose, avoid or insufficient_data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..knowledge.drugs import UnknownDrug, resolve_drug
from ..errors import PgxInputError
from ..knowledge.guidelines import Recommendation, guidelines_for, hla_risks, recommendation
from ..pk.drug_model import UNKNOWN_PHENOTYPES, PatientFactors, drug_model, gene_status
from ..pk.scenarios import resolve_dose_mg
from .regimen import RegimenChoice, Target, _steady_state_metric, attainment, choose_regimen, default_target

Verdict = Literal["ok", "adjust_dose", "avoid", "insufficient_data"]
# A prescribed regimen whose probability of target attainment is this much below the best
# candidate's is worth changing (absolute difference in probability).
PTA_GAIN_FOR_ADJUSTMENT = 0.20


@dataclass(frozen=True)
class ExposureAssessment:
    target: Target
    metric_median: float
    metric_p05: float
    metric_p95: float
    probability_of_target_attainment: float
    above_toxicity_threshold: float | None  # fraction of draws above the first toxicity threshold


@dataclass(frozen=True)
class Evaluation:
    drug: str
    dose_mg: float
    interval_h: float
    verdict: Verdict
    reasons: list[str]
    phenotypes: dict[str, dict[str, object]]
    recommendation: Recommendation | None
    genotype_risks: list[str]
    exposure: ExposureAssessment | None
    suggested_regimen: RegimenChoice | None
    alternatives: list[str]
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        rec = self.recommendation
        return {
            "drug": self.drug,
            "regimen": {"dose_mg": self.dose_mg, "interval_h": self.interval_h},
            "verdict": self.verdict,
            "reasons": self.reasons,
            "phenotypes": self.phenotypes,
            "cpic": None if rec is None else {
                "recommendation": rec.text, "action": rec.action, "phenotypes": rec.phenotypes,
                "guideline": rec.guideline.url if rec.guideline else None,
                "cpic_level": rec.guideline.cpic_level if rec.guideline else None,
                "pmids": list(rec.guideline.pmids) if rec.guideline else [],
                "strength": None,  # not in the knowledge base (pypgx tables carry no strength column)
            },
            "genotype_risks": self.genotype_risks,
            "exposure": None if self.exposure is None else {**self.exposure.__dict__, "target": self.exposure.target.__dict__},
            "suggested_regimen": None if self.suggested_regimen is None else self.suggested_regimen.as_dict(),
            "alternatives": self.alternatives,
            "missing": self.missing,
        }


def _cpic_genes(drug: str) -> list[str]:
    """Genes with an actionable (level A/B) CPIC guideline for the drug."""
    return sorted({g.gene for g in guidelines_for(drug) if g.cpic_level in ("A", "A/B", "B") and g.url})


def evaluate_prescription(
    drug: str,
    dose: str,
    interval_h: float,
    patient: PatientFactors,
    *,
    hla: dict[str, str] | None = None,
    parameter_draws: dict[str, np.ndarray] | None = None,
    n: int = 300,
    seed: int = 1,
    not_simulated: str | None = None,
) -> Evaluation:
    """One verdict for ``dose`` every ``interval_h`` h of ``drug`` in this patient.

    ``hla`` maps HLA genes to typed diplotypes (outside calls); ``parameter_draws`` come from the
    individual posterior when drug levels are known (else the prior is used).  ``not_simulated``
    (a reason) skips the exposure model: guidance from genotype alone, with the reason given.
    """
    name = drug.lower()
    try:
        name = resolve_drug(drug)
        in_library = True
    except UnknownDrug:
        in_library = False
        if not guidelines_for(name):
            raise
    reasons: list[str] = []
    missing: list[str] = []
    risks = [f"{r.text} ({r.source})" for r in hla_risks(name, hla or {})]
    hla_genes = {g.gene for g in guidelines_for(name) if g.gene.startswith("HLA-")}
    for gene in sorted(hla_genes):
        if gene not in (hla or {}):
            missing.append(f"{gene} typing (CPIC guideline for {name})")

    phenotypes: dict[str, dict[str, object]] = {}
    effective: dict[str, str] = {}
    for gene in _cpic_genes(name):
        if gene.startswith("HLA-"):
            continue
        status = gene_status(gene, patient)
        phenotypes[gene] = status.as_dict()
        shown = status.effective_phenotype
        if status.phenotype in UNKNOWN_PHENOTYPES and status.diplotype is None:
            missing.append(f"{gene} genotype (CPIC guideline for {name})")
        elif shown in UNKNOWN_PHENOTYPES:
            continue  # typed, but the knowledge base has no phenotype rule for this gene
        else:
            effective[gene] = status.phenotype if shown and "(with" in shown else shown  # type: ignore[assignment]
    rec = recommendation(name, effective) if effective else None
    if rec is not None and rec.text:
        reasons.append(f"CPIC ({', '.join(f'{g} {p}' for g, p in rec.phenotypes.items())}): {rec.text}")

    dose_mg = float("nan")
    exposure = suggestion = None
    simulated = False
    if not_simulated is not None:
        reasons.append(f"exposure not predicted: {not_simulated}")
    elif in_library:
        model = drug_model(name)
        dose_mg = resolve_dose_mg(model, dose, patient)
        if parameter_draws is None:
            try:
                individual = model.individualise(patient)
            except PgxInputError as exc:
                # the library leaves out genotype effects it has no source for: guidance alone, said so
                reasons.append(f"exposure not predicted: {exc}")
            else:
                parameter_draws = model.sample(individual.parameters, n, np.random.default_rng(seed))
                reasons.extend(individual.notes)
        simulated = parameter_draws is not None
    if simulated:
        target = default_target(model, patient)
        values, _, _ = _steady_state_metric(model, parameter_draws, dose_mg, interval_h, target.metric, target.analyte)
        q = np.quantile(values, [0.05, 0.5, 0.95])
        pta = attainment(values, target)
        toxic = None
        if model.drug.toxicity_thresholds:
            threshold = model.drug.toxicity_thresholds[0]
            if threshold.high is not None and threshold.unit == "mg/L":
                tox_values, _, _ = _steady_state_metric(
                    model, parameter_draws, dose_mg, interval_h, {"concentration": "cmax"}.get(threshold.metric, threshold.metric),  # type: ignore[arg-type]
                    threshold.analyte or target.analyte,
                )
                toxic = float(np.mean(tox_values > threshold.high))
        exposure = ExposureAssessment(target, float(q[1]), float(q[0]), float(q[2]), pta, toxic)
        reasons.append(
            f"predicted {target.metric} {q[1]:.3g} mg/L (90% interval {q[0]:.3g}-{q[2]:.3g}) vs target"
            f" {target.low:.3g}-{target.high:.3g}: probability of target attainment {pta:.0%}"
        )
        best = choose_regimen(name, patient, target=target, parameter_draws=parameter_draws)
        if best.best.pta - pta >= PTA_GAIN_FOR_ADJUSTMENT:
            suggestion = best
    elif not in_library:
        reasons.append(f"{name} is not in the drug library: genotype-based guidance only")

    alternatives = _alternatives(rec)
    if risks:
        verdict: Verdict = "avoid"
        reasons = risks + reasons
    elif missing and rec is None:
        verdict = "insufficient_data"
        suggestion = None  # a dose for an unknown genotype would be a normal-metabolizer guess
    elif rec is not None and rec.action == "avoid":
        verdict = "avoid"
    elif rec is not None and rec.action in ("standard", "monitor"):
        # the guideline's explicit word wins over the model; the model's view stays in the reasons
        verdict = "ok"
        if suggestion is not None:
            reasons.append("the guideline recommends standard dosing; the model-based regimen is for information")
    elif (rec is not None and rec.action == "adjust_dose") or suggestion is not None:
        verdict = "adjust_dose"
        if suggestion is None and simulated:
            suggestion = choose_regimen(name, patient, parameter_draws=parameter_draws)
    else:
        verdict = "ok"
    if suggestion is not None:
        reasons.append(
            f"model-based regimen {suggestion.best.dose_mg:g} mg every {suggestion.best.interval_h:g} h: probability"
            f" of target attainment {suggestion.best.pta:.0%}"
        )
    return Evaluation(
        name, dose_mg, interval_h, verdict, reasons, phenotypes, rec, risks, exposure, suggestion, alternatives, missing
    )


def _alternatives(rec: Recommendation | None) -> list[str]:
    """Drugs the CPIC text names as alternatives (those the knowledge base knows by name)."""
    if rec is None or rec.action != "avoid":
        return []
    from ..knowledge.tables import read_table

    known = {r["Drug"].lower() for r in read_table("cpic-table.csv")}
    words = {w.strip(".,;()").lower() for w in rec.text.split()}
    return sorted((known & words) - {rec.drug})
