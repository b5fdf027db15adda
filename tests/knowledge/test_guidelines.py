"""CPIC guideline lookups and HLA genotype-only risks."""

from __future__ import annotations

import pytest

from pgxtwin.knowledge.guidelines import classify, guidelines_for, hla_risks, hla_rules, recommendation


@pytest.mark.parametrize(
    ("drug", "phenotypes", "action"),
    [
        ("clopidogrel", {"CYP2C19": "Poor Metabolizer"}, "avoid"),
        ("clopidogrel", {"CYP2C19": "Normal Metabolizer"}, "standard"),
        ("codeine", {"CYP2D6": "Ultrarapid Metabolizer"}, "avoid"),
        ("tacrolimus", {"CYP3A5": "Normal Metabolizer"}, "adjust_dose"),
        ("citalopram", {"CYP2C19": "Poor Metabolizer"}, "adjust_dose"),
        ("simvastatin", {"SLCO1B1": "Poor Function"}, "avoid"),
        ("fluorouracil", {"DPYD": "Intermediate Metabolizer"}, "adjust_dose"),
    ],
)
def test_recommendation_actions(drug, phenotypes, action):
    rec = recommendation(drug, phenotypes)
    assert rec is not None and rec.action == action, rec
    assert rec.guideline is not None and rec.guideline.url.startswith("https://cpicpgx.org/")


def test_no_row_means_no_recommendation():
    assert recommendation("clopidogrel", {"CYP2D6": "Poor Metabolizer"}) is None
    assert classify(None) == "no_recommendation"


def test_guideline_table_links_genes_and_pmids():
    genes = {g.gene for g in guidelines_for("warfarin")}
    assert {"CYP2C9", "VKORC1"} <= genes
    assert any(g.pmids for g in guidelines_for("warfarin"))


def test_hla_rules_cite_cpic_and_match_allele_fields():
    assert all("PMID" in rule.source for rule in hla_rules())
    assert [r.allele for r in hla_risks("abacavir", {"HLA-B": "*57:01:01/*08:01"})] == ["*57:01"]
    assert hla_risks("abacavir", {"HLA-B": "*57:03/*08:01"}) == []
    assert [r.gene for r in hla_risks("carbamazepine", {"HLA-A": "*31:01/*02:01", "HLA-B": "*15:02/*07:02"})] == ["HLA-B", "HLA-A"]
