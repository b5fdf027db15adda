"""The drug library: every file loads against the schema, every number is sourced, names resolve."""

from __future__ import annotations

import pytest

from pgxtwin.knowledge.drugs import UnknownDrug, drug_names, enzyme_activity, library_digest, load_drug, perpetrators, resolve_drug
from pgxtwin.knowledge.drugs.schema import Parameter
from pgxtwin.knowledge.phenotypes import phenotype_names

from .sourced import sourced_numbers


def test_library_loads_and_names_match_files():
    names = drug_names()
    assert len(names) >= 15
    for name in names:
        assert load_drug(name).name == name


@pytest.mark.parametrize("name", drug_names())
def test_every_number_names_its_source(name):
    drug = load_drug(name)
    numbers = list(sourced_numbers(drug, "drug"))
    assert numbers
    for where, number in numbers:
        assert len(number.source.strip()) >= 8, where
    for pname, param in drug.parameters.items():
        assert isinstance(param, Parameter) and param.unit, pname


@pytest.mark.parametrize("name", drug_names())
def test_genotype_factor_groups_are_knowledge_base_phenotypes(name):
    drug = load_drug(name)
    for effect in drug.genotype_effects:
        if effect.method == "per_phenotype":
            known = phenotype_names(effect.gene)
            for group in effect.factors:
                assert group in known, f"{name}: {effect.gene} factor for unknown phenotype {group!r}"


def test_enzyme_and_interaction_tables_load():
    cyp2d6 = enzyme_activity("CYP2D6")
    assert cyp2d6 is not None and cyp2d6.activity_score_reference.value == 2
    assert enzyme_activity("NOT-A-GENE") is None
    strong = [p for p in perpetrators() if p.drug == "paroxetine" and p.gene == "CYP2D6"]
    assert strong and strong[0].effect == "strong_inhibitor"


def test_unknown_drug_suggests_the_nearest_names():
    with pytest.raises(UnknownDrug) as err:
        resolve_drug("clopidogrl")
    assert "clopidogrel" in err.value.suggestions
    assert resolve_drug("Clopidogrel") == "clopidogrel"


def test_library_digest_is_stable():
    assert library_digest() == library_digest() and len(library_digest()) == 64
