"""Mercaptopurine in the drug library: 6-MP -> red-cell 6-TGN (Hawwa 2008), TPMT on 6-TGN formation.

The TPMT size checked here is the library's own source: Hawwa AF et al. Br J Clin Pharmacol
2008;66:826-837 (doi:10.1111/j.1365-2125.2008.03281.x) Table 4, theta_TPMT = 2.56 on the fraction of
6-MP forming 6-TGN in TPMT*3 carriers (all heterozygous, i.e. Intermediate Metabolizers).
"""

from __future__ import annotations

import math

import pytest

from pgxtwin.errors import PgxInputError
from pgxtwin.knowledge.drugs import load_drug, resolve_drug
from pgxtwin.pk.drug_model import GeneInput, PatientFactors, drug_model
from pgxtwin.pk.scenarios import exposure_ratio, resolve_dose_mg, simulate_regimen
from pgxtwin.twin.regimen import candidate_regimens

from .sourced import sourced_numbers

TGN = "6-TGN"
PARENT = "mercaptopurine"
DOI = "doi:10.1111/j.1365-2125.2008.03281.x"
HAWWA_THETA_TPMT = 2.56  # Table 4: FM3 x 2.56 in TPMT*3 carriers
HAWWA_FM3, HAWWA_KME_FRACTION = 0.0191, 0.78  # Table 4 / Methods
HAWWA_CL_TGN_BSA1, HAWWA_BSA_EXPONENT, HAWWA_MEDIAN_BSA = 0.00914, 1.16, 1.14  # Table 4, Table 1


def _tpmt(phenotype: str) -> PatientFactors:
    return PatientFactors(weight_kg=30.0, genes={"TPMT": GeneInput.from_text("TPMT", phenotype)})


def test_library_file_loads_with_red_cell_tgn_as_main_analyte():
    drug = load_drug("mercaptopurine")
    assert drug.model.structure == "parent_metabolite"
    model = drug_model("mercaptopurine")
    assert model.analytes == {TGN: "metabolite", PARENT: "parent"}
    assert list(model.analytes)[0] == TGN
    for synonym in ("6-MP", "Purinethol", "Purixan"):
        assert resolve_drug(synonym) == "mercaptopurine"
    assert drug.cpic_genes == ["TPMT", "NUDT15"]
    assert drug.dosing.standard.dose == "2.5 mg/kg" and drug.dosing.standard.interval_h == 24
    assert 50 in drug.dosing.strengths_mg
    assert drug.therapeutic_window is None  # no sourced 6-TGN target on this model's scale


def test_every_number_and_parameter_names_its_source():
    drug = load_drug("mercaptopurine")
    numbers = list(sourced_numbers(drug, "mercaptopurine"))
    assert len(numbers) >= len(drug.parameters) + 4
    for where, number in numbers:
        assert ("Hawwa 2008" in number.source or "PMID" in number.source or "label" in number.source), where
    for name, param in drug.parameters.items():
        assert param.unit and "Hawwa 2008" in param.source, name
    assert DOI in drug.model.source


def test_parameters_reproduce_the_hawwa_table_4_values():
    p = drug_model("mercaptopurine").reference_parameters(None)
    assert p["fm"] == pytest.approx(HAWWA_KME_FRACTION * HAWWA_FM3, rel=0.005)
    assert p["cl_m"] == pytest.approx(HAWWA_CL_TGN_BSA1 * HAWWA_MEDIAN_BSA**HAWWA_BSA_EXPONENT, rel=0.005)
    assert p["cl"] / p["v"] == pytest.approx(0.53)  # k20, 1/h
    assert (p["ka"], p["f"]) == (1.3, 0.22)


def test_tpmt_intermediate_raises_tgn_by_the_cited_factor():
    (effect,) = [e for e in load_drug("mercaptopurine").genotype_effects if e.gene == "TPMT"]
    assert effect.parameter == "fm"
    factor = effect.factors["Intermediate Metabolizer"]
    assert factor.value == HAWWA_THETA_TPMT and "Table 4" in factor.source
    result = exposure_ratio("mercaptopurine", "TPMT", "Intermediate Metabolizer", "Normal Metabolizer",
                            metric="auc", analyte=TGN, design="steady_state")
    assert result.ratio > 1.0  # less methylation by TPMT -> more 6-TGN
    assert result.ratio == pytest.approx(HAWWA_THETA_TPMT, rel=0.01)


def test_tpmt_leaves_the_parent_unchanged():
    # theta_TPMT shifts the 6-TGN/6-mMPN split, not 6-MP elimination (k20 fixed in Hawwa)
    parent = exposure_ratio("mercaptopurine", "TPMT", "Intermediate Metabolizer", "Normal Metabolizer",
                            metric="auc", analyte=PARENT, design="single_dose")
    assert parent.ratio == pytest.approx(1.0, abs=0.01)


def test_unsourced_poor_metabolizer_fails_with_a_one_line_error():
    with pytest.raises(PgxInputError) as err:
        drug_model("mercaptopurine").individualise(_tpmt("Poor Metabolizer"))
    assert "TPMT" in str(err.value) and "\n" not in str(err.value)


def test_steady_state_tgn_follows_mass_balance():
    # Css,avg of 6-TGN = fm x f x dose rate / cl_m (independent of the 1 L convention volumes)
    model = drug_model("mercaptopurine")
    p = model.individualise(_tpmt("Normal Metabolizer")).parameters
    dose_mg = 2.5 * 30.0
    expected = p["fm"] * p["f"] * dose_mg / 24.0 / p["cl_m"]
    assert 0.5 < expected < 2.0
    sim = simulate_regimen("mercaptopurine", _tpmt("Normal Metabolizer"), dose="2.5 mg/kg", every_h=24.0, days=42)
    assert sim.metrics[TGN]["css_avg_mg_per_l"]["median"] == pytest.approx(expected, rel=0.01)
    half_life = math.log(2) * p["v_m"] / p["cl_m"]
    assert 48.0 < half_life < 96.0  # ~65 h: weeks to steady state, as CPIC's 2-4 weeks per adjustment


def test_the_per_kg_label_maximum_scales_with_weight() -> None:
    dosing = drug_model("mercaptopurine").drug.dosing
    assert dosing.max_single_dose_mg is None
    assert dosing.max_single_mg(30.0)[0] == pytest.approx(75.0)  # 2.5 mg/kg (label section 2.1)
    assert dosing.max_single_mg(None) is None  # weight unknown: no absolute cap to compare with
    assert max(d for d, _ in candidate_regimens(drug_model("mercaptopurine"), 30.0)) <= 75.0
    # a dose far beyond 2.5 mg/kg for a 30 kg child is refused, not simulated
    with pytest.raises(PgxInputError, match="implausible"):
        resolve_dose_mg(drug_model("mercaptopurine"), "2 g", PatientFactors(weight_kg=30.0))
