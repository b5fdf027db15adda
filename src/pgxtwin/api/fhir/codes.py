"""Code systems and code tables for FHIR import and export, each entry with its source.

Codes not listed here are not guessed: an Observation with an unknown code is skipped with the
reason "not a code pgxtwin reads".  LOINC codes are copyright Regenstrief Institute (LOINC license).
"""

from __future__ import annotations

from typing import Final

from ...knowledge.drugs import drug_names, load_drug
from ...knowledge.guidelines import drug_for_rxnorm, guidelines_for

# --- code systems (FHIR R4 terminology page; HL7 Genomics Reporting IG 3.0.0 aliases)
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
SNOMED: Final = "http://snomed.info/sct"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
HGNC_GENE_ID: Final = "http://www.genenames.org/geneId"  # IG 3.0.0 $HGNCID; older examples use http://www.genenames.org
TBD_CODES: Final = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074: Final = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section: GE = genetics
RELATED_ARTIFACT_EXT: Final = "http://hl7.org/fhir/StructureDefinition/workflow-relatedArtifact"

# --- Genomics Reporting IG 3.0.0 profiles and codes (HL7/genomics-reporting tag 3.0.0, input/fsh/*.fsh;
#     the examples in ../shared/fixtures/fhir/genomics-reporting-3.0.0 use exactly these)
IG: Final = "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition"
PROFILE_GENOTYPE: Final = f"{IG}/genotype"
PROFILE_THERAPEUTIC_IMPLICATION: Final = f"{IG}/therapeutic-implication"
PROFILE_MEDICATION_RECOMMENDATION: Final = f"{IG}/medication-recommendation"
GENOTYPE: Final = "84413-4"             # LOINC "Genotype display name"
HAPLOTYPE: Final = "84414-2"            # LOINC "Haplotype name"
VARIANT: Final = "69548-6"              # LOINC "Genetic variant assessment"
GENE_STUDIED: Final = "48018-6"         # LOINC "Gene studied [ID]"
MEDICATION_ASSESSED: Final = "51963-7"  # LOINC "Medication assessed [ID]"
EVIDENCE_LEVEL: Final = "93044-6"       # LOINC "Level of evidence"
THERAPEUTIC_IMPLICATION: Final = "therapeutic-implication"  # tbd-codes-cs, IG 3.0.0
PREDICTED_THERAPEUTIC_IMPLICATION: Final = "predicted-therapeutic-implication"  # tbd-codes-cs, IG 2.0 / genomics-operations
CONCLUSION_STRING: Final = "conclusion-string"  # tbd-codes-cs
# IG 1.x therapeutic-implication component "effect-medication-metabolism" (LOINC "Genetic variation's
# effect on drug metabolism", answers LL3856-3), HL7/genomics-reporting STU1 input/fsh CGImplications.fsh
EFFECT_MEDICATION_METABOLISM: Final = "53040-2"

# Phenotype terms of the IG value set genetic-therapeutic-implications-vs (HL7/genomics-reporting
# input/fsh/CGValueSets.fsh, ValueSet GeneticTherapeuticImplicationsVS): LOINC answer code -> display.
IMPLICATION_ANSWERS: Final[dict[str, str]] = {
    "LA10315-2": "Ultrarapid metabolizer",
    "LA25391-6": "Normal metabolizer",
    "LA25390-8": "Rapid metabolizer",
    "LA10317-8": "Intermediate metabolizer",
    "LA9657-3": "Poor metabolizer",
    "LA19542-2": "Low Risk",
    "LA19541-4": "High Risk",
    "LA6676-6": "Resistant",
    "LA6677-4": "Responsive",
    "LA25392-4": "Increased function",
    "LA25393-2": "Normal function",
    "LA25395-7": "Decreased function",
    "LA25394-0": "Poor function",
}

# Medication recommendation Task codes (LOINC answer list LL4049-4) as used by the IG 3.0.0
# examples Task-MedicationRecommendationExample1 / Task-PGxRecEx03 / Bundle-bundle-pgxexample.
# Only these three are verified here; other recommendations are exported as text.
RECOMMEND_ALTERNATIVE: Final = ("LA26421-0", "Consider alternative medication")
RECOMMEND_DECREASE: Final = ("LA26422-8", "Decrease dose")
RECOMMEND_INCREASE: Final = ("LA26423-6", "Increase dose")

# --- HGNC gene ids (source of record: genenames.org).  Cross-checked against the IG examples (CYP2C19,
#     CYP2C9, CYP2D6, HLA-B, VKORC1 in ../shared/fixtures/fhir; HLA-A in the IG's HLA examples), the HL7
#     genomics-operations reference-server queries (CYP3A5, NUDT15, SLCO1B1, TPMT, UGT1A1) and ClinGen
#     gene-validity records (DPYD, TPMT, SLCO1B1, UGT1A1).  Genes not listed are exported as text.
HGNC_IDS: Final[dict[str, str]] = {
    "CYP2B6": "HGNC:2615",
    "CYP2C19": "HGNC:2621",
    "CYP2C9": "HGNC:2623",
    "CYP2D6": "HGNC:2625",
    "CYP3A5": "HGNC:2638",
    "DPYD": "HGNC:3012",
    "HLA-A": "HGNC:4931",
    "HLA-B": "HGNC:4932",
    "NUDT15": "HGNC:23063",
    "SLCO1B1": "HGNC:10959",
    "TPMT": "HGNC:12014",
    "UGT1A1": "HGNC:12530",
    "VKORC1": "HGNC:23663",
}
GENE_BY_HGNC_ID: Final[dict[str, str]] = {v: k for k, v in HGNC_IDS.items()}

# --- covariates: LOINC code -> twin covariate (pgxtwin.twin.state.COVARIATES)
COVARIATE_CODES: Final[dict[str, str]] = {
    "29463-7": "weight",            # Body weight; FHIR R4 vital-signs profile "bodyweight"
    "8302-2": "height",             # Body height; FHIR R4 vital-signs profile "bodyheight"
    "2160-0": "serum_creatinine",   # Creatinine [Mass/volume] in Serum or Plasma
    # Creatinine [Mass/volume] in Blood: how Synthea codes creatinine (../shared/fixtures/fhir/README.md);
    # taken as the twin's creatinine covariate, which does not distinguish the specimen
    "38483-4": "serum_creatinine",
    "1751-7": "albumin",            # Albumin [Mass/volume] in Serum or Plasma (HSPC quantitative LOINC value set)
}

# eGFR codes: kept as laboratory values with their unit (the twin computes its own CKD-EPI 2021 eGFR)
EGFR_CODES: Final[dict[str, str]] = {
    "33914-3": "eGFR (MDRD)",  # Synthea (../shared/fixtures/fhir/README.md), mL/min/{1.73_m2}
    "98980-6": "eGFR (CKD-EPI 2021, creatinine and cystatin C)",  # CH LAB-Report IG 1.0.0 eGFRcr-cys profile
}

# Drug concentrations: LOINC code -> (library drug, specimen).  Sources: laboratory test catalogues
# naming the result LOINC (Mayo Clinic Laboratories, Barnes-Jewish Hospital) and loinc.org.
DRUG_LEVEL_CODES: Final[dict[str, tuple[str, str]]] = {
    "11253-2": ("tacrolimus", "whole blood"),   # Tacrolimus [Mass/volume] in Blood (loinc.org/11253-2; BJH 1829)
    "74096-9": ("tacrolimus", "whole blood"),   # Tacrolimus [Mass/volume] in Blood by Immunoassay (loinc.org/74096-9)
    "3968-5": ("phenytoin", "serum or plasma"),  # Phenytoin [Mass/volume] in Serum or Plasma (Mayo PNYA)
    "38370-3": ("voriconazole", "serum or plasma"),  # Voriconazole [Mass/volume] in Serum or Plasma (Mayo VORI)
}

# SNOMED CT route codes (FHIR R4 value set route-codes) -> twin route; other routes are not modelled
ORAL_ROUTES: Final = frozenset({"26643006"})       # Oral route
INTRAVENOUS_ROUTES: Final = frozenset({"47625008"})  # Intravenous route

# UCUM codes that pint spells differently (UCUM, unitsofmeasure.org: customary units in brackets)
UCUM_TO_PINT: Final[dict[str, str]] = {
    "[lb_av]": "lb",
    "[oz_av]": "oz",
    "[in_i]": "inch",
    "[ft_i]": "foot",
}

# FHIR timing.repeat.periodUnit (UCUM subset) -> hours
PERIOD_UNIT_H: Final[dict[str, float]] = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0, "wk": 168.0}


def drug_for_rxnorm_code(code: str) -> str | None:
    """Library drug whose RxNorm ingredient is ``code``, else the CPIC table's drug for it (lower case)."""
    for name in drug_names():
        if load_drug(name).rxnorm_ingredient == code:
            return name
    return drug_for_rxnorm(code)


def rxnorm_for_drug(drug: str) -> str | None:
    """RxNorm ingredient CUI of a drug: the drug library's, else the CPIC table's."""
    if drug in drug_names():
        code = load_drug(drug).rxnorm_ingredient
        if code:
            return code
    return next((g.rxnorm for g in guidelines_for(drug) if g.rxnorm), None)
