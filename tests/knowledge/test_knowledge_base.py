"""Knowledge base: pypgx tables read as data, the cited overlay applied, phenotype rules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgxtwin.knowledge.alleles import Variant, callable_genes, gene_definition, trim_alleles
from pgxtwin.knowledge.overlay import load_overlay
from pgxtwin.knowledge.phenotypes import INDETERMINATE, phenotype_from_score, phenotype_of, phenotype_names
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
