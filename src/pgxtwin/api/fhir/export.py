"""The twin's pharmacogenomic results as HL7 Genomics Reporting IG 3.0.0 resources in a FHIR R4
``collection`` Bundle.

* one **genotype** Observation (LOINC 84413-4, gene in component 48018-6) per gene with a call
  (VCF call, called or partial, or an outside call), value ``GENE *a/*b`` as text;
* one **therapeutic implication** Observation per drug and gene for every drug whose CPIC
  recommendation covers the twin's phenotypes (pypgx recommendation table): medication assessed
  (51963-7, RxNorm), the phenotype (``therapeutic-implication``: LOINC answer from the IG value set
  when one exists, always the knowledge base's term as text), CPIC level (93044-6), the
  recommendation text (``conclusion-string``) and the guideline as a related artifact; HLA alleles
  with a risk rule (``hla_rules.yaml``) give a "High Risk" implication;
* one **medication recommendation** Task per drug whose recommendation asks for an action:
  "Consider alternative medication" (avoid) or "Decrease dose" / "Increase dose" (dose change whose
  direction the CPIC text states).

References inside the Bundle use ``urn:uuid`` full URLs derived from the patient and resource id,
so the same twin version always gives the same references.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from ...genomics.result import GeneResult
from ...knowledge.guidelines import Recommendation, guidelines_for, hla_risks, hla_rules, recommendation
from ...knowledge.phenotypes import INDETERMINATE, NO_RULE
from ...knowledge.tables import read_table
from ...twin.state import TwinState
from . import codes

__all__ = ["export_bundle"]

_EXPORTED_STATUSES = {"called", "partial", "outside_call"}
_CATEGORY = [
    {"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "laboratory"}]},
    {"coding": [{"system": codes.V2_0074, "code": "GE"}]},
]
_DECREASE = re.compile(r"(reduc|decreas|lower)", re.I)
_INCREASE = re.compile(r"(increas|higher)", re.I)
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9\-.]+")
_ANSWER_BY_TERM = {display.lower(): code for code, display in codes.IMPLICATION_ANSWERS.items()}


def _fhir_id(*parts: str) -> str:
    return _ID_UNSAFE.sub("-", "-".join(parts)).strip("-")[:64]


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


class _Builder:
    def __init__(self, state: TwinState, now: datetime) -> None:
        self.state = state
        self.now = _iso(now)
        self.entries: list[dict[str, Any]] = []
        self.patient_ref = self.add({"resourceType": "Patient", "id": state.patient_id} | self.demographics())

    def full_url(self, resource_type: str, resource_id: str) -> str:
        name = f"pgxtwin:{self.state.patient_id}:{resource_type}/{resource_id}"
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"

    def add(self, resource: dict[str, Any]) -> str:
        url = self.full_url(resource["resourceType"], resource["id"])
        self.entries.append({"fullUrl": url, "resource": resource})
        return url

    def demographics(self) -> dict[str, Any]:
        d = self.state.demographics
        out: dict[str, Any] = {}
        if d.sex is not None:
            out["gender"] = "male" if d.sex == "M" else "female"
        if d.birth_date is not None:
            out["birthDate"] = d.birth_date.isoformat()
        return out

    def observation(self, resource_id: str, profile: str, code: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": resource_id, "meta": {"profile": [profile]}, "status": "final",
                "category": _CATEGORY, "code": code, "subject": {"reference": self.patient_ref},
                "issued": self.now} | fields

    # --- genotypes
    def genotype(self, gene: str, result: GeneResult) -> str | None:
        if result.status not in _EXPORTED_STATUSES:
            return None
        if result.diplotypes:
            value = f"{gene} {result.diplotypes[0]}"
        elif result.detected_alleles and gene.startswith("HLA-"):
            value = f"{gene}{'/'.join(result.detected_alleles)}"
        else:
            return None
        hgnc = codes.HGNC_IDS.get(gene)
        gene_value = _concept(codes.HGNC_GENE_ID, hgnc, gene) if hgnc else {"text": gene}
        fields: dict[str, Any] = {
            "valueCodeableConcept": {"text": value},
            "component": [{"code": _concept(codes.LOINC, codes.GENE_STUDIED, "Gene studied [ID]"),
                           "valueCodeableConcept": gene_value}],
            "note": [{"text": self.provenance(result)}],
        }
        recorded = self.state.genotype.recorded_at
        if recorded is not None:
            fields["effectiveDateTime"] = _iso(recorded)
        resource = self.observation(_fhir_id("pgx-genotype", gene), codes.PROFILE_GENOTYPE,
                                    _concept(codes.LOINC, codes.GENOTYPE, "Genotype display name"), **fields)
        return self.add(resource)

    def provenance(self, result: GeneResult) -> str:
        if result.status == "outside_call":
            return "; ".join(result.notes) or "outside call"
        kb = self.state.genotype.knowledge_base_version
        partial = " (partial: some defining positions missing)" if result.status == "partial" else ""
        return f"called by pgxtwin from a VCF{partial}, knowledge base {kb}"

    # --- implications and recommendations
    def implication(self, resource_id: str, drug: str, gene: str, term: str, *, text: str, level: str | None,
                    url: str | None, genotype_ref: str | None) -> str:
        rxnorm = codes.rxnorm_for_drug(drug)
        medication = _concept(codes.RXNORM, rxnorm, drug, drug) if rxnorm else {"text": drug}
        answer = _ANSWER_BY_TERM.get(term.lower())
        phenotype_text = f"{gene} {term}"
        phenotype = (_concept(codes.LOINC, answer, codes.IMPLICATION_ANSWERS[answer], phenotype_text) if answer
                     else {"text": phenotype_text})
        hgnc = codes.HGNC_IDS.get(gene)
        component = [
            {"code": _concept(codes.LOINC, codes.MEDICATION_ASSESSED, "Medication assessed [ID]"),
             "valueCodeableConcept": medication},
            {"code": _concept(codes.TBD_CODES, codes.THERAPEUTIC_IMPLICATION, "Therapeutic Implication"),
             "valueCodeableConcept": phenotype},
            {"code": _concept(codes.LOINC, codes.GENE_STUDIED, "Gene studied [ID]"),
             "valueCodeableConcept": _concept(codes.HGNC_GENE_ID, hgnc, gene) if hgnc else {"text": gene}},
        ]
        if level:
            component.append({"code": _concept(codes.LOINC, codes.EVIDENCE_LEVEL, "Level of evidence"),
                              "valueCodeableConcept": {"text": f"CPIC Level {level}"}})
        if text:
            component.append({"code": _concept(codes.TBD_CODES, codes.CONCLUSION_STRING, "Conclusion string"),
                              "valueString": text})
        fields: dict[str, Any] = {"component": component}
        if genotype_ref:
            fields["derivedFrom"] = [{"reference": genotype_ref}]
        if url:
            fields["extension"] = [{"url": codes.RELATED_ARTIFACT_EXT,
                                    "valueRelatedArtifact": {"type": "citation", "url": url}}]
        resource = self.observation(resource_id, codes.PROFILE_THERAPEUTIC_IMPLICATION,
                                    _concept(codes.TBD_CODES, codes.THERAPEUTIC_IMPLICATION, "Therapeutic Implication"),
                                    **fields)
        return self.add(resource)

    def task(self, resource_id: str, drug: str, action_code: tuple[str, str], text: str, reason_ref: str) -> None:
        code, display = action_code
        self.add({
            "resourceType": "Task", "id": resource_id,
            "meta": {"profile": [codes.PROFILE_MEDICATION_RECOMMENDATION]},
            "status": "requested", "intent": "proposal",
            "code": _concept(codes.LOINC, code, display, f"{display}: {drug}"),
            "description": text, "for": {"reference": self.patient_ref}, "authoredOn": self.now,
            "reasonReference": {"reference": reason_ref},
        })


def _action_code(rec: Recommendation) -> tuple[str, str] | None:
    """The IG Task code for a recommendation's action, when its direction is known."""
    if rec.action == "avoid":
        return codes.RECOMMEND_ALTERNATIVE
    if rec.action == "adjust_dose":
        if _DECREASE.search(rec.text) and not _INCREASE.search(rec.text):
            return codes.RECOMMEND_DECREASE
        if _INCREASE.search(rec.text) and not _DECREASE.search(rec.text):
            return codes.RECOMMEND_INCREASE
    return None


def _phenotypes(genes: dict[str, GeneResult]) -> dict[str, str]:
    return {g: r.phenotype for g, r in genes.items()
            if r.status in _EXPORTED_STATUSES and r.phenotype not in (NO_RULE, INDETERMINATE)}


def export_bundle(state: TwinState, *, now: datetime | None = None) -> dict[str, Any]:
    """The twin's genotypes, therapeutic implications and medication recommendations as a FHIR R4
    ``collection`` Bundle (a JSON-ready dict)."""
    moment = now or datetime.now(timezone.utc)
    build = _Builder(state, moment)
    genes = state.genotype.genes
    genotype_refs = {gene: ref for gene, result in sorted(genes.items()) if (ref := build.genotype(gene, result))}
    phenotypes = _phenotypes(genes)
    drugs = sorted({row["Drug"].lower() for row in read_table("cpic-table.csv") if row["Gene"] in phenotypes})
    for drug in drugs:
        rec = recommendation(drug, phenotypes)
        if rec is None:
            continue
        refs = []
        for gene, term in sorted(rec.phenotypes.items()):
            guideline = next((g for g in guidelines_for(drug) if g.gene == gene), rec.guideline)
            refs.append(build.implication(
                _fhir_id("pgx-implication", drug, gene), drug, gene, term, text=rec.text,
                level=guideline.cpic_level if guideline else None, url=guideline.url if guideline else None,
                genotype_ref=genotype_refs.get(gene)))
        action = _action_code(rec)
        if action is not None and refs:
            build.task(_fhir_id("pgx-recommendation", drug), drug, action, rec.text, refs[0])
    hla = {g: "/".join(r.diplotypes[:1] or r.detected_alleles) for g, r in genes.items()
           if g.startswith("HLA-") and r.status in _EXPORTED_STATUSES and (r.diplotypes or r.detected_alleles)}
    for drug in sorted({d for rule in hla_rules() for d in rule.drugs}):
        for rule in hla_risks(drug, hla):
            suffix = (drug, rule.gene, rule.allele)
            ref = build.implication(_fhir_id("pgx-implication", *suffix), drug, rule.gene, "High Risk",
                                    text=f"{rule.gene}{rule.allele}: {rule.text}", level=None, url=None,
                                    genotype_ref=genotype_refs.get(rule.gene))
            build.task(_fhir_id("pgx-recommendation", *suffix), drug, codes.RECOMMEND_ALTERNATIVE, rule.text, ref)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pgxtwin:{state.patient_id}:export:{state.version}")),
        "meta": {"lastUpdated": build.now},
        "identifier": {"system": "urn:pgxtwin:twin-version", "value": f"{state.patient_id}/{state.version}"},
        "type": "collection",
        "timestamp": build.now,
        "entry": build.entries,
    }
