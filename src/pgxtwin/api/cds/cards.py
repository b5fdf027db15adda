"""CDS Hooks cards from the twin's assessments: one card per order the twin has something to say
about (none otherwise: alert fatigue), one summary card per chart with actionable results.

* indicator: ``critical`` when the drug should be avoided, ``warning`` when its dose should change,
  ``info`` for a suggested test or a chart summary without an affected current medication;
* source: the CPIC guideline of the gene-drug pair (pypgx ``cpic-table.csv``);
* suggestions (``selectionBehavior`` at-most-one): replace the draft order by the twin's model-based
  regimen (an ``update`` of the draft), by an alternative drug the guideline names (``delete`` +
  ``create``), or cancel it;
* overrideReasons: codes of the HL7 example non-adherence reason code system
  (``http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes``, CDS Hooks IG 3.0.0-ballot,
  ``input/vocabulary``), which the feedback's ``overrideReason`` maps back to.

Every card carries a ``rule`` (not sent): the gene-drug-result it fired on, e.g.
``clopidogrel:CYP2C19:Poor Metabolizer``, under which feedback is counted.
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...knowledge.drugs import UnknownDrug, load_drug
from ...knowledge.guidelines import Guideline, guidelines_for
from ...twin.evaluate import Evaluation
from ...twin.regimen import RegimenOutcome
from ..fhir.codes import RXNORM, UCUM, rxnorm_for_drug
from .assess import DrugAssessment, GeneFinding, TestingAdvice
from ..fhir.medication import normalise_dosage
from .drafts import DraftMedication

__all__ = ["OVERRIDE_REASONS", "RuledCard", "chart_card", "order_cards"]

SUMMARY_MAX = 139  # CDS Hooks 2.0: summary "<140-character"
NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
OVERRIDE_REASONS: tuple[dict[str, str], ...] = tuple(
    {"code": code, "system": NON_ADHERENCE, "display": display} for code, display in (
        ("action-performed-no-adverse-effect", "Intended action was performed previously without adverse effect"),
        ("patient-contraindication", "Patient has contraindication to recommended action"),
        ("risk-benefit-ratio", "Recipient assessment of risk/benefit ratio"),
        ("need-more-info", "Could not address recommended action due to need for more information/pending "
                           "results/pending consult"),
        ("recipient-disagrees-evidence", "Recipient disagrees with recommendation because of issues with the evidence"),
    )
)
CPIC_HOME = "https://cpicpgx.org/guidelines/"
MODEL_SOURCE = {"label": "pgxtwin pharmacokinetic twin (drug library model)"}


@dataclass(frozen=True)
class RuledCard:
    """A card (CDS Hooks JSON) and the rule it fired on."""

    card: dict[str, Any]
    rule: str


def _summary(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[:SUMMARY_MAX - 1].rstrip() + "…"


def _title(drug: str) -> str:
    return drug[:1].upper() + drug[1:]


def _source(guideline: Guideline | None, drug: str) -> dict[str, Any]:
    if guideline is None or not guideline.url:
        return dict(MODEL_SOURCE)
    return {"label": f"CPIC guideline: {drug} and {guideline.gene}", "url": guideline.url}


def _regimen_text(dose_mg: float, interval_h: float) -> str:
    return f"{dose_mg:g} mg every {interval_h:g} h"


def _timing(interval_h: float, legacy: bool) -> dict[str, Any]:
    per_day = 24.0 / interval_h
    repeat: dict[str, Any] = ({"frequency": int(round(per_day)), "period": 1, "periodUnit": "d"}
                              if abs(per_day - round(per_day)) < 1e-9 and per_day >= 1
                              else {"frequency": 1, "period": interval_h, "periodUnit": "h"})
    if legacy:
        repeat["periodUnits"] = repeat.pop("periodUnit")
    return {"repeat": repeat}


def _dose_quantity(dose_mg: float) -> dict[str, Any]:
    return {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}


def _with_regimen(order: DraftMedication, dose_mg: float, interval_h: float) -> dict[str, Any]:
    """The draft order in its entirety with the new regimen (R4 Dosage; DSTU2 style for MedicationOrder)."""
    resource = copy.deepcopy(dict(order.resource))
    dosages = resource.get("dosageInstruction")
    legacy = order.resource_type == "MedicationOrder"
    dosage = normalise_dosage(dosages[0]) if isinstance(dosages, list) and dosages else {}
    dosage["text"] = _regimen_text(dose_mg, interval_h)
    dosage["timing"] = _timing(interval_h, legacy)
    if legacy:
        dosage.pop("doseAndRate", None)
        dosage["doseQuantity"] = _dose_quantity(dose_mg)
    else:
        dosage["doseAndRate"] = [{"doseQuantity": _dose_quantity(dose_mg)}]
    resource["dosageInstruction"] = [dosage, *(dosages[1:] if isinstance(dosages, list) else [])]
    return resource


def _new_order(order: DraftMedication, drug: str, patient_id: str) -> dict[str, Any]:
    """A draft MedicationRequest for ``drug`` in place of ``order`` (the labelled regimen when known)."""
    original = order.resource
    concept: dict[str, Any] = {"text": drug}
    code = rxnorm_for_drug(drug)
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code, "display": drug}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest", "status": "draft",
        "intent": original.get("intent") if isinstance(original.get("intent"), str) else "order",
        "medicationCodeableConcept": concept,
        "subject": original.get("subject") if isinstance(original.get("subject"), Mapping)
        else {"reference": f"Patient/{patient_id}"},
    }
    if isinstance(original.get("encounter"), Mapping):
        resource["encounter"] = original["encounter"]
    try:
        standard = load_drug(drug).dosing.standard
        resource["dosageInstruction"] = [{"text": f"{standard.dose} every {standard.interval_h:g} h (labelled standard"
                                                  " regimen; review for this patient)",
                                          "timing": _timing(standard.interval_h, False)}]
    except UnknownDrug:
        pass
    return resource


def _new_regimen(ev: Evaluation) -> RegimenOutcome | None:
    """The twin's model-based regimen when it differs from the one ordered."""
    best = ev.suggested_regimen.best if ev.suggested_regimen is not None else None
    if best is None or (math.isclose(best.dose_mg, ev.dose_mg) and math.isclose(best.interval_h, ev.interval_h)):
        return None
    return best


def _suggestions(order: DraftMedication, assessment: DrugAssessment, patient_id: str,
                 alternatives: list[str]) -> list[dict[str, Any]]:
    ev = assessment.evaluation
    reference = order.reference
    out: list[dict[str, Any]] = []
    if reference is None:
        return out  # nothing to update or delete without the draft's id
    best = _new_regimen(ev)
    if ev.verdict == "adjust_dose" and best is not None:
        text = _regimen_text(best.dose_mg, best.interval_h)
        out.append({"label": f"Change to {text}", "uuid": str(uuid.uuid4()), "isRecommended": True, "actions": [{
            "type": "update", "description": f"Change the {ev.drug} order to {text}",
            "resource": _with_regimen(order, best.dose_mg, best.interval_h)}]})
    if ev.verdict == "avoid":
        for drug in alternatives:
            out.append({"label": f"Replace with {drug}", "uuid": str(uuid.uuid4()), "actions": [
                {"type": "delete", "description": f"Remove the {ev.drug} order", "resourceId": reference},
                {"type": "create", "description": f"Order {drug} instead", "resource": _new_order(order, drug, patient_id)},
            ]})
        out.append({"label": f"Cancel the {ev.drug} order", "uuid": str(uuid.uuid4()), "actions": [
            {"type": "delete", "description": f"Remove the {ev.drug} order", "resourceId": reference}]})
    return out


def _detail(order: DraftMedication, assessment: DrugAssessment, provenance: str) -> str:
    ev = assessment.evaluation
    lines = [f"**Order:** {order.label}" + (f" — {_regimen_text(ev.dose_mg, ev.interval_h)}"
                                           if math.isfinite(ev.dose_mg) else ""), "",
             f"**Patient data:** {provenance}", ""]
    genes = [f"{g} {s.get('diplotype') or ''} → {s.get('effective_phenotype') or s.get('phenotype')}".replace("  ", " ")
             for g, s in ev.phenotypes.items() if s.get("phenotype") or s.get("diplotype")]
    if genes:
        lines += [f"**Genotype:** {'; '.join(genes)}", ""]
    lines.append("**Predicted exposure vs target, and why:**" if ev.exposure is not None else "**Why:**")
    lines += [f"- {reason}" for reason in [*ev.reasons, *assessment.notes]]
    missing = [*ev.missing, *(f"{t.gene} result (FDA label: {t.fda_label.lower()})" for t in assessment.testing
                              if not any(m.startswith(t.gene + " ") for m in ev.missing))]
    if missing:
        lines += ["", "**Not known:** " + "; ".join(missing)]
    return "\n".join(lines)


def _rule(assessment: DrugAssessment) -> tuple[str, str, Guideline | None]:
    """(rule, summary, guideline) of an avoid/adjust verdict."""
    ev = assessment.evaluation
    drug = ev.drug
    if assessment.hla:
        risk = assessment.hla[0]
        guideline = next((g for g in guidelines_for(drug) if g.gene == risk.gene), None)
        return (f"{drug}:{risk.gene}:{risk.allele}", f"{_title(drug)}: {risk.gene}{risk.allele} carrier — avoid (CPIC)",
                guideline)
    rec = ev.recommendation
    if rec is not None and rec.action in ("avoid", "adjust_dose"):
        pairs = sorted(rec.phenotypes.items())
        rule = f"{drug}:" + ";".join(f"{g}:{p}" for g, p in pairs)
        found = ", ".join(f"{g} {p}" for g, p in pairs)
        verb = "avoid" if ev.verdict == "avoid" else "dose change advised"
        summary = f"{_title(drug)}: {verb} for {found} (CPIC)"
        best = _new_regimen(ev)
        if ev.verdict == "adjust_dose" and best is not None:
            summary += f"; twin suggests {_regimen_text(best.dose_mg, best.interval_h)}"
        return rule, summary, rec.guideline
    best = _new_regimen(ev)
    summary = f"{_title(drug)}: predicted exposure off target for this patient"
    if best is not None:
        summary += f"; twin suggests {_regimen_text(best.dose_mg, best.interval_h)}"
    genes = [g for g in guidelines_for(drug) if g.url]
    return f"{drug}:model:{ev.verdict}", summary, genes[0] if genes else None


def _testing_card(order: DraftMedication, drug: str, advice: tuple[TestingAdvice, ...], provenance: str) -> RuledCard:
    first = advice[0]
    genes = ", ".join(a.gene for a in advice)
    verb = "required" if any(a.fda_label == "Testing required" for a in advice) else "recommended"
    detail = "\n".join([
        f"**Order:** {order.label}", "", f"**Patient data:** {provenance}", "",
        *(f"- {a.gene}: FDA label status \"{a.fda_label}\" (PharmGKB drug-label annotation, in CPIC's gene-drug "
          f"table); no {a.gene} result is on file for this patient." for a in advice),
        "", "Order the test before the first dose, or record an existing result in the patient's twin.",
    ])
    card = {"summary": _summary(f"{_title(drug)}: {genes} testing {verb} before use (FDA label); no result on file"),
            "indicator": "info", "detail": detail, "source": _source(first.guideline, drug),
            "overrideReasons": [dict(r) for r in OVERRIDE_REASONS]}
    return RuledCard(card, f"{drug}:{first.gene}:testing")


def order_cards(order: DraftMedication, drug: str, assessment: DrugAssessment, patient_id: str, provenance: str,
                alternatives: list[str]) -> list[RuledCard]:
    """The card for one drug of a draft order ([] when the twin has nothing to say)."""
    ev = assessment.evaluation
    if ev.verdict not in ("avoid", "adjust_dose"):
        return [_testing_card(order, drug, assessment.testing, provenance)] if assessment.testing else []
    rule, summary, guideline = _rule(assessment)
    card: dict[str, Any] = {
        "summary": _summary(summary),
        "indicator": "critical" if ev.verdict == "avoid" else "warning",
        "detail": _detail(order, assessment, provenance),
        "source": _source(guideline, drug),
        "overrideReasons": [dict(r) for r in OVERRIDE_REASONS],
    }
    suggestions = _suggestions(order, assessment, patient_id, alternatives)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    return [RuledCard(card, rule)]


def chart_card(findings: tuple[GeneFinding, ...], medications: tuple[str, ...], provenance: str) -> RuledCard | None:
    """patient-view: one summary of the actionable results (None when there is none)."""
    if not findings:
        return None
    current = set(medications)
    affected = sorted({(d, a) for f in findings for d, a in f.drugs if d in current})
    n_drugs = len({d for f in findings for d, _ in f.drugs})
    results = ", ".join(f"{f.gene} {f.result}" if not f.result.endswith("carrier") else f"{f.gene}{f.result}"
                        for f in findings)
    summary = f"Actionable PGx results: {results} ({n_drugs} drugs with changed guidance)"
    if affected:
        summary = f"PGx: current {', '.join(d for d, _ in affected)} affected — " + results
    lines = [f"**Patient data:** {provenance}", "", "| Gene | Result | Avoid | Adjust dose |", "|---|---|---|---|"]
    for f in findings:
        avoid = ", ".join(d for d, a in f.drugs if a == "avoid") or "—"
        adjust = ", ".join(d for d, a in f.drugs if a == "adjust_dose") or "—"
        lines.append(f"| {f.gene} | {f.result} | {avoid} | {adjust} |")
    if affected:
        lines += ["", "**Current medications affected:** " + ", ".join(
            f"{d} ({'avoid' if a == 'avoid' else 'adjust dose'})" for d, a in affected)]
    lines += ["", "Guidance per CPIC recommendation tables (pypgx); HLA risks per the CPIC HLA guidelines."]
    card = {"summary": _summary(summary), "indicator": "warning" if affected else "info", "detail": "\n".join(lines),
            "source": {"label": "CPIC guidelines", "url": CPIC_HOME}}
    return RuledCard(card, "chart:pgx-summary")
