"""The shipped allele-frequency file: provenance, consistency with the knowledge base, CPIC's
reference-allele rule, and the validator's refusals."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from importlib import resources

from pgxtwin.knowledge.alleles import gene_definition
from pgxtwin.knowledge.frequencies import (
    FREQUENCY_RESOURCE,
    OUTSIDE_LIMIT,
    FrequencyDataError,
    FrequencyFile,
    _check_gene,
    allele_frequencies,
    allele_sort_key,
    cpic_group_name,
    frequency_data,
    frequency_genes,
    groups,
    groups_with_data,
    is_known_allele,
    missing_reason,
)

CPIC_GROUPS = (
    "European",
    "East Asian",
    "Sub-Saharan African",
    "African American/Afro-Caribbean",
    "Latino",
    "Central/South Asian",
    "Near Eastern",
    "Oceanian",
    "American",
)


def _raw() -> dict:
    text = resources.files("pgxtwin.knowledge.data").joinpath(FREQUENCY_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def test_groups_are_the_nine_cpic_groups_in_snake_case():
    assert tuple(cpic_group_name(g) for g in groups()) == CPIC_GROUPS
    for group in groups():
        assert group == group.lower() and " " not in group and "/" not in group


def test_every_gene_names_a_source_with_a_version():
    data = frequency_data()
    for gene, entry in data.genes.items():
        cited = [entry.source, *entry.allele_sources.values()]
        for source in cited:
            assert data.sources[source].version, (gene, source)
        # the CPIC database is the primary source of every gene
        assert "CPIC" in data.sources[entry.source].title


@pytest.mark.parametrize("gene", ["CYP2C19", "CYP2C9", "CYP2D6", "CYP3A5", "DPYD", "NUDT15", "SLCO1B1", "TPMT"])
def test_completed_frequencies_sum_to_one_and_use_knowledge_base_alleles(gene):
    for group in groups_with_data(gene):
        freqs = allele_frequencies(gene, group)
        assert math.isclose(sum(freqs.frequencies), 1.0, abs_tol=1e-12)
        assert all(f > 0 for f in freqs.frequencies)
        assert all(is_known_allele(gene, a) for a in freqs.alleles)
        assert freqs.citation


def test_cyp2c19_listed_frequencies_sum_to_one_as_published():
    # CPIC publishes *1 itself as 1 - the sum of the others: a transcription error would show
    raw = _raw()["genes"]["CYP2C19"]["groups"]
    assert set(raw) == set(groups())
    for group, alleles in raw.items():
        assert abs(sum(alleles.values()) - 1.0) < 1e-6, group


def test_remainder_rule_gives_the_reference_allele_one_minus_the_others():
    raw = _raw()["genes"]["CYP2C9"]["groups"]["european"]
    freqs = allele_frequencies("CYP2C9", "european")
    by_allele = dict(zip(freqs.alleles, freqs.frequencies))
    assert by_allele["*1"] == pytest.approx(1.0 - sum(raw.values()), abs=1e-12)
    assert by_allele["*2"] == pytest.approx(raw["*2"], rel=1e-12)


def test_alleles_are_in_knowledge_base_order():
    freqs = allele_frequencies("CYP2C19", "east_asian")
    order = gene_definition("CYP2C19").allele_order
    assert list(freqs.alleles) == sorted(freqs.alleles, key=order.__getitem__)


def test_copy_number_alleles_follow_their_base_allele():
    alleles = allele_frequencies("CYP2D6", "european").alleles
    assert alleles[:7] == ("*1", "*1x2", "*1x≥3", "*2", "*2x2", "*2x≥3", "*3")
    keys = [allele_sort_key("CYP2D6", a) for a in ("*4", "*4x2", "*4x≥3", "*5")]
    assert keys == sorted(keys)


def test_excluded_groups_have_reasons_and_no_numbers():
    assert groups_with_data("CYP3A5") == ("european", "east_asian", "latino")
    assert "*7" in missing_reason("CYP3A5", "sub_saharan_african")
    assert "sub_saharan_african" not in groups_with_data("CYP2D6")
    assert "*149" in missing_reason("CYP2D6", "sub_saharan_african")
    assert groups_with_data("CYP2B6") == ()
    assert "no sourced" in missing_reason("CYP2B6", "european")
    with pytest.raises(KeyError):
        allele_frequencies("CYP3A5", "sub_saharan_african")


@pytest.mark.parametrize("gene", ["CYP2B6", "UGT1A1"])
def test_genes_without_a_cpic_frequency_source_are_absent_not_filled_with_normal_genotypes(gene):
    # no transcription of CPIC's CYP2B6/UGT1A1 frequency tables could be sourced (see the note at
    # the end of the data file): the gene has no entry, so no group can be sampled and every
    # group's refusal says why
    assert gene not in frequency_genes()
    assert groups_with_data(gene) == ()
    for group in groups():
        assert missing_reason(gene, group) == "no sourced allele frequencies for this gene"
        with pytest.raises(KeyError):
            allele_frequencies(gene, group)


@pytest.mark.parametrize("group", ["sub_saharan_african", "african_american_afro_caribbean", "central_south_asian", "near_eastern"])
def test_cyp3a5_groups_without_a_star7_number_stay_excluded(group):
    # CYP3A5*7 (no function, an insertion) has no CPIC number per group here: the remainder rule
    # would count it as *1, so these groups must be refused, with the allele named in the reason
    assert group not in groups_with_data("CYP3A5")
    assert "*7" in missing_reason("CYP3A5", group)


def test_cyp2d6_is_cpics_table_summing_to_one_with_the_alleles_outside_the_knowledge_base():
    gene = _raw()["genes"]["CYP2D6"]
    for group, alleles in gene["groups"].items():
        outside = gene["outside_knowledge_base"].get(group, {})
        assert abs(sum(alleles.values()) + sum(outside.values()) - 1.0) < 1e-6, group
        assert sum(outside.values()) <= OUTSIDE_LIMIT
        # left out of sampling: the others are scaled up by exactly 1 / (1 - left-out mass)
        sampled = allele_frequencies("CYP2D6", group)
        freqs = dict(zip(sampled.alleles, sampled.frequencies))
        assert freqs["*1"] == pytest.approx(alleles["*1"] / (1.0 - sum(outside.values())), rel=1e-6)
        assert not set(freqs) & set(outside)
    # the copy-number alleles CPIC lists, as named in CPIC's table
    assert {"*1x2", "*1x≥3", "*2x2", "*4x2", "*10x2", "*41x2"} <= set(gene["groups"]["european"])


def test_well_known_frequencies_are_where_cpic_puts_them():
    # CYP2C19*2 is several times commoner in Oceanian than in European chromosomes, CYP2C9*8
    # is an African-ancestry allele, CYP3A5*3 is the common allele in Europeans
    def f(gene, group, allele):
        fr = allele_frequencies(gene, group)
        return dict(zip(fr.alleles, fr.frequencies)).get(allele, 0.0)

    assert f("CYP2C19", "oceanian", "*2") > 4 * f("CYP2C19", "european", "*2")
    assert f("CYP2C9", "sub_saharan_african", "*8") > 10 * f("CYP2C9", "european", "*8")
    assert f("CYP3A5", "european", "*3") > 0.9
    # CYP2D6*10 is the common East Asian allele, *4 the European no-function allele, and gene
    # duplications are commonest in Oceanian chromosomes
    assert f("CYP2D6", "east_asian", "*10") > 0.4 > f("CYP2D6", "european", "*10")
    assert f("CYP2D6", "european", "*4") > 10 * f("CYP2D6", "east_asian", "*4")
    assert f("CYP2D6", "oceanian", "*1x2") > 10 * f("CYP2D6", "european", "*1x2")
    assert frequency_genes() == ("CYP2C19", "CYP2C9", "CYP2D6", "CYP3A5", "DPYD", "NUDT15", "SLCO1B1", "TPMT")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g["groups"]["european"].update({"*999": 0.01}), "not in the knowledge base"),
        (lambda g: g["groups"]["european"].update({"*2": 0.5}), "sum to"),
        (lambda g: g["groups"].update({"martian": {"*1": 1.0}}), "unknown group"),
        (lambda g: g.update({"source": "nowhere"}), "unknown source"),
        (lambda g: g["groups"]["european"].update({"*3": -0.1}), "not in (0, 1]"),
    ],
)
def test_validator_refuses_inconsistent_data(mutate, message):
    raw = copy.deepcopy(_raw())
    mutate(raw["genes"]["CYP2C19"])
    data = FrequencyFile.model_validate(raw)
    with pytest.raises(FrequencyDataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        _check_gene("CYP2C19", data.genes["CYP2C19"], data)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g["groups"]["european"].update({"*999x2": 0.001}), "not in the knowledge base"),
        (lambda g: g["outside_knowledge_base"]["european"].update({"*4": 0.001}), "is in the knowledge base"),
        (lambda g: g["outside_knowledge_base"]["european"].update({"*149": 0.02}), "exclude the group"),
        (lambda g: g["groups"]["european"].update({"*1x2": 0.5}), "sum to"),
    ],
)
def test_validator_refuses_inconsistent_copy_number_data(mutate, message):
    raw = copy.deepcopy(_raw())
    mutate(raw["genes"]["CYP2D6"])
    data = FrequencyFile.model_validate(raw)
    with pytest.raises(FrequencyDataError, match=message):
        _check_gene("CYP2D6", data.genes["CYP2D6"], data)


def test_copy_number_alleles_are_known_only_where_the_gene_has_activity_scores():
    assert is_known_allele("CYP2D6", "*2x≥3") and is_known_allele("CYP2D6", "*36+*10")
    assert not is_known_allele("CYP2D6", "*999x2")
    assert not is_known_allele("CYP2B6", "*6x2")  # CYP2B6 phenotypes come from a diplotype table
    assert is_known_allele("UGT1A1", "*80+*28")  # a knowledge-base allele whose name has a "+"


def test_remainder_genes_may_not_list_their_reference_allele():
    raw = copy.deepcopy(_raw())
    raw["genes"]["CYP2C9"]["groups"]["european"]["*1"] = 0.7
    data = FrequencyFile.model_validate(raw)
    with pytest.raises(FrequencyDataError, match="sum to"):
        _check_gene("CYP2C9", data.genes["CYP2C9"], data)
