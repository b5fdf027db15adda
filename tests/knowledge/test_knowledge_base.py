"""Knowledge base: pypgx tables read as data, the cited overlay applied, phenotype rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgxtwin.knowledge.alleles import Variant, callable_genes, gene_definition, trim_alleles
from pgxtwin.knowledge.overlay import load_overlay
from pgxtwin.knowledge.phenotypes import (
    INDETERMINATE,
    activity_score,
    haplotype_score,
    phenotype_from_score,
    phenotype_of,
    phenotype_names,
)
from pgxtwin.knowledge.version import knowledge_base_version


def test_tables_are_read_without_importing_pypgx():
    code = (
        "import sys; from pgxtwin.knowledge.alleles import gene_definition; gene_definition('CYP2C19');"
        "print('pypgx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_every_overlay_entry_cites_a_source_and_applies():
    overlay = load_overlay()
    assert overlay.corrections
    for fix in overlay.corrections:
        assert len(fix.source) > 40
        definition = gene_definition(fix.gene, fix.assembly)
        positions = {p.pos for p in definition.positions}
        assert Variant.parse(fix.variant).pos in positions, fix


def test_cyp2c19_rs3758581_is_in_every_allele_but_38():
    definition = gene_definition("CYP2C19", "GRCh38")
    variant = Variant.parse("10-94842866-A-G")
    for allele in definition.alleles:
        if allele.structural:
            continue
        assert (variant in allele.core) == (allele.name != "*38"), allele.name


def test_grch37_reference_swaps_are_corrected():
    cyp3a5 = gene_definition("CYP3A5", "GRCh37")
    swap = Variant.parse("7-99270539-C-T")
    assert all((swap in a.core) == (a.name != "*3") for a in cyp3a5.alleles)
    dpyd = gene_definition("DPYD", "GRCh37")
    c85 = Variant.parse("1-98348885-G-A")
    assert all((c85 in a.core) == (a.name != "c.85T>C (*9A)") for a in dpyd.alleles)


def test_added_allele_from_cpic():
    allele = gene_definition("DPYD").allele("c.1129-5923C>G")
    assert allele.activity_value == 0.5 and allele.function == "Decreased Function"


@pytest.mark.parametrize(
    ("ref", "alt", "expected"),
    [("CAT", "CATAT", (0, "C", "CAT")), ("C", "CAT", (0, "C", "CAT")), ("CATAT", "CAT", (0, "CAT", "C")), ("G", "A", (0, "G", "A"))],
)
def test_trim_alleles_normalises_repeat_indels(ref, alt, expected):
    assert trim_alleles(ref, alt) == expected


def test_callable_genes_cover_the_cpic_genes_and_leave_cyp2d6_to_outside_calls():
    genes = set(callable_genes())
    assert {"CYP2C19", "CYP2C9", "CYP3A5", "CYP4F2", "CYP2B6", "DPYD", "TPMT", "NUDT15", "SLCO1B1", "UGT1A1", "VKORC1", "ABCG2"} <= genes
    assert "CYP2D6" not in genes


@pytest.mark.parametrize(
    ("gene", "a", "b", "phenotype", "score"),
    [
        ("CYP2C19", "*2", "*17", "Intermediate Metabolizer", None),
        ("CYP2C19", "*2", "*2", "Poor Metabolizer", None),
        ("CYP2C19", "*17", "*17", "Ultrarapid Metabolizer", None),
        ("CYP2C9", "*1", "*3", "Intermediate Metabolizer", 1.0),
        ("CYP2C9", "*3", "*3", "Poor Metabolizer", 0.0),
        ("DPYD", "Reference", "c.2846A>T", "Intermediate Metabolizer", 1.5),
        ("TPMT", "*1", "*3A", "Intermediate Metabolizer", None),
        ("SLCO1B1", "*5", "*5", "Poor Function", None),
        ("CYP3A5", "*3", "*3", "Poor Metabolizer", None),
    ],
)
def test_cpic_phenotype_rules(gene, a, b, phenotype, score):
    call = phenotype_of(gene, a, b)
    assert call.phenotype == phenotype
    assert call.activity_score == score
    assert phenotype in phenotype_names(gene)


def test_activity_score_boundaries():
    assert phenotype_from_score("CYP2D6", 0.0) == "Poor Metabolizer"
    assert phenotype_from_score("CYP2D6", 0.25) == "Intermediate Metabolizer"
    assert phenotype_from_score("CYP2D6", 1.25) == "Normal Metabolizer"
    assert phenotype_from_score("CYP2D6", 3.0) == "Ultrarapid Metabolizer"
    assert phenotype_from_score("CYP2C9", 2.5) == INDETERMINATE  # no CPIC rule above 2


def test_knowledge_base_version_is_traceable():
    kb = knowledge_base_version()
    assert kb["pypgx_version"] == "0.27.0"
    assert len(kb["tables_sha256"]) == 64 and len(kb["overlay_sha256"]) == 64
    assert kb["version"].startswith("pypgx-0.27.0+")


# --- copy-number and tandem alleles (CPIC's CYP2D6 rule, Caudle et al. 2020, PMID 31647186) ----

_CYP2D6_SCORED = sorted(
    (a.name, a.activity_value) for a in gene_definition("CYP2D6").alleles if a.activity_value is not None
)
_CYP2D6_UNSCORED = sorted(a.name for a in gene_definition("CYP2D6").alleles if a.activity_value is None)


@pytest.mark.parametrize(
    "a, b, phenotype, score",
    [
        ("*1x2", "*4", "Normal Metabolizer", 2.0),  # the example
        ("*1", "*1x2", "Ultrarapid Metabolizer", 3.0),
        ("*4x2", "*4", "Poor Metabolizer", 0.0),
        ("*10x2", "*4", "Intermediate Metabolizer", 0.5),  # CPIC: *10x2 = 2 x 0.25
        ("*41x2", "*5", "Intermediate Metabolizer", 1.0),
        ("*2x2", "*41", "Ultrarapid Metabolizer", 2.5),
        ("*36+*10", "*1", "Normal Metabolizer", 1.25),  # tandem: the parts' sum
        ("*4x≥3", "*5", "Poor Metabolizer", 0.0),  # no function however many copies
    ],
)
def test_copy_number_alleles_score_value_times_copies(a, b, phenotype, score):
    assert phenotype_of("CYP2D6", a, b) == phenotype_of("CYP2D6", b, a)
    call = phenotype_of("CYP2D6", a, b)
    assert (call.phenotype, call.activity_score) == (phenotype, score)


def test_at_least_n_copies_decides_only_when_every_higher_score_agrees():
    # *1x≥3 is at least 3: ultrarapid whatever the other allele, but the exact score is unknown
    assert phenotype_of("CYP2D6", "*1x≥3", "*4") == phenotype_of("CYP2D6", "*4", "*1x≥3")
    assert phenotype_of("CYP2D6", "*1x≥3", "*4").phenotype == "Ultrarapid Metabolizer"
    assert phenotype_of("CYP2D6", "*1x≥3", "*4").activity_score is None
    assert activity_score("CYP2D6", "*2x≥3", "*1") is None
    # *41x≥3 is at least 1.5: normal at 3 copies, ultrarapid at 5
    assert phenotype_of("CYP2D6", "*41x≥3", "*4").phenotype == INDETERMINATE
    assert haplotype_score("CYP2D6", "*41x>=3") == haplotype_score("CYP2D6", "*41x≥3")


def test_copy_number_of_an_uncertain_allele_is_indeterminate():
    assert phenotype_of("CYP2D6", "*22x2", "*1").phenotype == INDETERMINATE
    assert phenotype_of("CYP2D6", "*1x≥3", "*22").phenotype == INDETERMINATE


def test_names_the_knowledge_base_defines_are_not_parsed():
    # UGT1A1 "*80+*28" and DPYD "c.1905+1G>A (*2A)" are single alleles of the knowledge base
    assert phenotype_of("UGT1A1", "*80+*28", "*1").phenotype != INDETERMINATE
    assert haplotype_score("DPYD", "c.1905+1G>A (*2A)").value == 0.0


@pytest.mark.parametrize("allele", ["*999x2", "*1x0", "*1x", "x2", "*1+*999", "*4x2x2"])
def test_unknown_copy_number_alleles_are_refused(allele):
    with pytest.raises(KeyError):
        phenotype_of("CYP2D6", allele, "*1")


@settings(max_examples=200, deadline=None)
@given(
    first=st.sampled_from(_CYP2D6_SCORED),
    second=st.sampled_from(_CYP2D6_SCORED),
    copies=st.integers(1, 6),
)
def test_duplicated_allele_scores_copies_times_its_value(first, second, copies):
    (a, value_a), (b, value_b) = first, second
    name = a if copies == 1 else f"{a}x{copies}"
    call = phenotype_of("CYP2D6", name, b)
    assert call.activity_score == pytest.approx(value_a * copies + value_b)
    assert call.phenotype == phenotype_from_score("CYP2D6", value_a * copies + value_b)
    assert call == phenotype_of("CYP2D6", b, name)


@settings(max_examples=200, deadline=None)
@given(first=st.sampled_from(_CYP2D6_SCORED), second=st.sampled_from(_CYP2D6_SCORED), copies=st.integers(2, 6))
def test_at_least_n_copies_is_never_contradicted_by_more_copies(first, second, copies):
    (a, _), (b, _) = first, second
    bound = phenotype_of("CYP2D6", f"{a}x≥{copies}", b).phenotype
    if bound != INDETERMINATE:  # then every actual copy number gives the same phenotype
        for more in range(copies, copies + 6):
            assert phenotype_of("CYP2D6", f"{a}x{more}", b).phenotype == bound


@settings(max_examples=100, deadline=None)
@given(unscored=st.sampled_from(_CYP2D6_UNSCORED), other=st.sampled_from(_CYP2D6_SCORED), copies=st.integers(1, 4))
def test_unscored_alleles_stay_indeterminate_in_any_copy_number(unscored, other, copies):
    assert phenotype_of("CYP2D6", f"{unscored}x{copies}", other[0]).phenotype == INDETERMINATE
    assert phenotype_of("CYP2D6", f"{other[0]}+{unscored}", other[0]).phenotype == INDETERMINATE


@pytest.mark.parametrize("allele", ["*1x2", "*1x4", "*4x2", "*10x2", "*41x2", "*36+*10", "*1x2+*4x2+*10"])
def test_copy_number_scores_agree_with_pypgxs_own_rule(allele):
    pypgx = pytest.importorskip("pypgx")
    assert haplotype_score("CYP2D6", allele).value == pytest.approx(pypgx.predict_score("CYP2D6", allele))
