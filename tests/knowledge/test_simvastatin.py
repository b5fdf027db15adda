"""Simvastatin in the drug library: lactone prodrug -> simvastatin acid, SLCO1B1 on the acid's clearance.

The SLCO1B1 size checked here is the library's own source (Pasanen et al. 2006, PMID 17108811: acid AUC
221% larger in c.521CC than in c.521TT), not the validation row (Mykkänen et al. 2022, PMID 35652242).
"""

from __future__ import annotations

import math

import pytest

from pgxtwin.errors import PgxInputError
from pgxtwin.knowledge.drugs import load_drug, resolve_drug
from pgxtwin.knowledge.drugs.schema import Sourced
from pgxtwin.pk.drug_model import GeneInput, PatientFactors, drug_model
from pgxtwin.pk.scenarios import exposure_ratio

from .sourced import sourced_numbers

ACID = "simvastatin acid"
LACTONE = "simvastatin"
PASANEN_CC_VS_TT = 1.0 + 2.21  # PMID 17108811: acid AUC +221% in c.521CC vs c.521TT
PASANEN_CC_VS_TC = 1.0 + 1.20  # PMID 17108811: acid AUC +120% in c.521CC vs c.521TC
VALIDATION_PMID = "35652242"  # Mykkänen 2022, the validation row's own source

# Jin 2014 (doi:10.1007/s11095-013-1284-0) Table III, the full model the library file reduces
JIN_CL, JIN_FM, JIN_Q64, JIN_CLM = 571.0, 0.236, 112.0, 0.035


def _poor_function_factor() -> Sourced:
    (effect,) = [e for e in load_drug("simvastatin").genotype_effects if e.gene == "SLCO1B1"]
    return effect.factors["Poor Function"]


def test_library_file_loads_with_the_acid_as_main_analyte():
    drug = load_drug("simvastatin")
    assert drug.model.structure == "parent_metabolite"
    model = drug_model("simvastatin")
    assert list(model.analytes) == [ACID, LACTONE]
    assert model.analytes == {ACID: "metabolite", LACTONE: "parent"}
    assert resolve_drug("Zocor") == "simvastatin"
    assert drug.cpic_genes == ["SLCO1B1"]
    assert drug.dosing.max_daily_dose_mg is not None and drug.dosing.max_daily_dose_mg.value == 40
    assert 80 in drug.dosing.strengths_mg and drug.dosing.max_single_dose_mg.value == 40


def test_every_number_and_parameter_names_its_source():
    drug = load_drug("simvastatin")
    numbers = list(sourced_numbers(drug, "simvastatin"))
    assert len(numbers) >= len(drug.parameters) + 4
    for where, number in numbers:
        assert ("PMID" in number.source or "doi:" in number.source or "Jin 2014" in number.source
                or "label" in number.source), where
        assert VALIDATION_PMID not in number.source, where
    for name, param in drug.parameters.items():
        assert param.unit and param.source, name


def test_reduced_model_keeps_the_jin_lactone_and_acid_auc():
    # mass balance of the full Jin model (reversible interconversion): AUC = Dose / clearance
    returned = JIN_FM * JIN_Q64 / (JIN_Q64 + JIN_CLM)
    lactone_cl = JIN_CL * (1.0 - returned)
    acid_cl = (JIN_Q64 + JIN_CLM) * (1.0 - returned) / JIN_FM
    p = drug_model("simvastatin").reference_parameters(None)
    assert p["cl"] / p["f"] == pytest.approx(lactone_cl, rel=0.01)
    assert p["cl_m"] / (p["fm"] * p["f"]) == pytest.approx(acid_cl, rel=0.01)


def test_poor_function_raises_acid_auc_by_the_cited_factor():
    factor = _poor_function_factor()
    assert "17108811" in factor.source and VALIDATION_PMID not in factor.source
    result = exposure_ratio("simvastatin", "SLCO1B1", "Poor Function", "Normal Function",
                            metric="auc", analyte=ACID, design="single_dose")
    assert result.ratio > 1.0
    assert result.ratio == pytest.approx(PASANEN_CC_VS_TT, rel=0.02)
    assert result.ratio == pytest.approx(1.0 / factor.value, rel=0.01)
    steady = exposure_ratio("simvastatin", "SLCO1B1", "Poor Function", "Normal Function",
                            metric="auc", analyte=ACID, design="steady_state")
    assert steady.ratio == pytest.approx(result.ratio, rel=0.01)


def test_transporter_effect_leaves_the_lactone_unchanged():
    lactone = exposure_ratio("simvastatin", "SLCO1B1", "Poor Function", "Normal Function",
                             metric="auc", analyte=LACTONE, design="single_dose")
    assert lactone.ratio == pytest.approx(1.0, abs=0.01)


def test_decreased_function_lies_between_normal_and_poor_as_cited():
    decreased = exposure_ratio("simvastatin", "SLCO1B1", "Decreased Function", "Normal Function",
                               metric="auc", analyte=ACID, design="single_dose").ratio
    poor = exposure_ratio("simvastatin", "SLCO1B1", "Poor Function", "Normal Function",
                          metric="auc", analyte=ACID, design="single_dose").ratio
    assert 1.0 < decreased < poor
    assert poor / decreased == pytest.approx(PASANEN_CC_VS_TC, rel=0.02)


def test_unsourced_increased_function_fails_with_a_one_line_error():
    patient = PatientFactors(genes={"SLCO1B1": GeneInput.from_text("SLCO1B1", "Increased Function")})
    with pytest.raises(PgxInputError) as err:
        drug_model("simvastatin").individualise(patient)
    assert "SLCO1B1" in str(err.value) and "\n" not in str(err.value)


def test_acid_concentration_follows_formation_and_is_finite():
    model = drug_model("simvastatin")
    p = model.reference_parameters(None)
    lactone_half_life = math.log(2) * p["v"] / p["cl"]
    acid_half_life = math.log(2) * p["v_m"] / p["cl_m"]
    assert acid_half_life < lactone_half_life  # formation-rate limited, as interconversion makes it in Jin
    assert 3.0 < lactone_half_life < 7.0  # cross-check: 4.85 h observed (PMID 23469684)
