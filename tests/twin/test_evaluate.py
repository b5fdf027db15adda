"""Prescription evaluation and model-based regimen choice on real library drugs."""

from __future__ import annotations

import pytest

from pgxtwin.pk.drug_model import GeneInput, PatientFactors
from pgxtwin.twin.evaluate import evaluate_prescription
from pgxtwin.twin.regimen import candidate_regimens, choose_regimen
from pgxtwin.pk.drug_model import drug_model


def _patient(gene: str, phenotype: str, **kw) -> PatientFactors:
    return PatientFactors(weight_kg=75, genes={gene: GeneInput(phenotype=phenotype)}, **kw)


def test_clopidogrel_in_a_poor_metabolizer_is_avoided_with_the_cpic_reason():
    ev = evaluate_prescription("clopidogrel", "75 mg", 24, _patient("CYP2C19", "Poor Metabolizer"), n=100)
    assert ev.verdict == "avoid"
    assert ev.recommendation is not None and "Avoid" in ev.recommendation.text
    assert ev.exposure is not None and ev.exposure.metric_median < ev.exposure.target.low


def test_normal_metabolizer_on_standard_clopidogrel_is_ok():
    ev = evaluate_prescription("clopidogrel", "75 mg", 24, _patient("CYP2C19", "Normal Metabolizer"), n=100)
    assert ev.verdict == "ok"


def test_missing_genotype_is_insufficient_data_not_normal():
    ev = evaluate_prescription("clopidogrel", "75 mg", 24, PatientFactors(weight_kg=75), n=100)
    assert ev.verdict == "insufficient_data"
    assert any("CYP2C19" in m for m in ev.missing)


def test_phenoconversion_makes_codeine_avoided():
    patient = PatientFactors(genes={"CYP2D6": GeneInput.from_text("CYP2D6", "*1/*1")}, comedications=("paroxetine",))
    ev = evaluate_prescription("codeine", "30 mg", 6, patient, n=50)
    assert ev.phenotypes["CYP2D6"]["genotype_phenotype"] == "Normal Metabolizer"
    assert ev.phenotypes["CYP2D6"]["phenotype"] == "Poor Metabolizer"
    assert ev.verdict == "avoid"


def test_hla_risk_needs_no_simulation():
    ev = evaluate_prescription("abacavir", "300 mg", 12, PatientFactors(), hla={"HLA-B": "*57:01/*08:01"})
    assert ev.verdict == "avoid" and ev.genotype_risks


def test_cpic_dose_reduction_gives_adjust_dose_with_a_regimen():
    ev = evaluate_prescription("escitalopram", "10 mg", 24, _patient("CYP2C19", "Poor Metabolizer"), n=100)
    assert ev.verdict == "adjust_dose"
    assert ev.suggested_regimen is not None


def test_regimen_choice_prefers_higher_target_attainment():
    patient = _patient("CYP2C19", "Poor Metabolizer")
    choice = choose_regimen("escitalopram", patient, n=200)
    assert choice.best.pta == pytest.approx(max(c.pta for c in choice.candidates), abs=0.011)
    assert (choice.best.dose_mg, choice.best.interval_h) in candidate_regimens(drug_model("escitalopram"))
    assert choice.p05.shape == choice.median.shape == choice.times_h.shape


def test_call_results_reach_the_pk_layer_by_one_rule():
    from pgxtwin.genomics.result import GeneResult
    from pgxtwin.pk.drug_model import gene_inputs

    def result(status, diplotypes, phenotype, score=None):
        return GeneResult(status=status, diplotypes=diplotypes, phenotype=phenotype, activity_score=score,
                          alleles=[], missing_positions=[], unexpected_variants=[], notes=[])

    inputs = gene_inputs({
        # called: the top-ranked diplotype is the call, lower-ranked alternatives are only listed
        "TPMT": result("called", ["*1/*3A", "*3B/*3C"], "Intermediate Metabolizer"),
        # partial: the shared phenotype only, no diplotype
        "CYP2C9": result("partial", ["*1/*1", "*1/*3"], "Indeterminate"),
        # no star-allele call, but CPIC's rs4149056 fallback phenotype
        "SLCO1B1": result("no_call", ["rs4149056T/rs4149056C"], "Decreased Function"),
        "DPYD": result("no_call", [], "Indeterminate"),
    })
    assert inputs["TPMT"].diplotype == "*1/*3A"
    assert "CYP2C9" not in inputs and "DPYD" not in inputs
    assert inputs["SLCO1B1"].phenotype == "Decreased Function" and inputs["SLCO1B1"].diplotype is None


def test_a_phenotype_the_library_has_no_source_for_gets_guidance_without_a_guessed_exposure() -> None:
    # citalopram's library encodes only the CYP2C19 poor-metabolizer effect (label); an intermediate
    # metabolizer is not simulated with a made-up factor, but still gets the CPIC guidance
    patient = PatientFactors(genes={"CYP2C19": GeneInput.from_text("CYP2C19", "Intermediate Metabolizer")})
    ev = evaluate_prescription("citalopram", "20 mg", 24.0, patient)
    assert ev.exposure is None and ev.suggested_regimen is None
    assert any(r.startswith("exposure not predicted: citalopram: no relative CYP2C19 activity") for r in ev.reasons)
    assert ev.recommendation is not None and ev.verdict == "ok"
