"""Star-allele frequencies per CPIC biogeographic group (``data/allele_frequencies.yaml``).

The numbers are CPIC's (see the file's ``sources``); this module only validates them against the
knowledge base and completes the reference allele by CPIC's rule (1 - the sum of the others)
where the transcription lacks its row.  Copy-number alleles (CYP2D6 ``*1x2``, ``*2x≥3``) are
valid where the knowledge base scores them (:func:`pgxtwin.knowledge.phenotypes.haplotype_score`).
Alleles the source lists but the knowledge base lacks are kept in the file with their numbers
(``outside_knowledge_base``) and left out of sampling; a group where they weigh more than
``OUTSIDE_LIMIT`` must be excluded instead.  Groups are named in snake case (``east_asian``); the
CPIC spelling is kept alongside (``East Asian``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .alleles import gene_definition
from .phenotypes import haplotype_score

FREQUENCY_RESOURCE = "allele_frequencies.yaml"
SUM_TOLERANCE = 1e-6  # published frequencies are given to 8 significant digits
# Largest allele mass per group that may lie outside the knowledge base (left out, the others
# scaled up by at most 1/(1 - 0.01)); a group above it is excluded with its reason.
OUTSIDE_LIMIT = 0.01


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str = Field(min_length=20)
    version: str = Field(min_length=4)
    transcribed_from: str | None = None


class NotSourced(_Strict):
    allele: str
    reason: str = Field(min_length=10)


class GeneFrequencies(_Strict):
    source: str
    reference_allele: str
    reference_rule: Literal["listed", "remainder"]
    allele_sources: dict[str, str] = Field(default_factory=dict)
    not_sourced: list[NotSourced] = Field(default_factory=list)
    excluded_groups: dict[str, str] = Field(default_factory=dict)
    outside_knowledge_base: dict[str, dict[str, float]] = Field(default_factory=dict)
    groups: dict[str, dict[str, float]]

    @model_validator(mode="after")
    def _groups_disjoint(self) -> "GeneFrequencies":
        both = set(self.groups) & set(self.excluded_groups)
        if both:
            raise ValueError(f"groups both given and excluded: {sorted(both)}")
        stray = set(self.outside_knowledge_base) - set(self.groups)
        if stray:
            raise ValueError(f"outside_knowledge_base names groups without data: {sorted(stray)}")
        return self


class FrequencyFile(_Strict):
    sources: dict[str, Source]
    groups: dict[str, str]
    genes: dict[str, GeneFrequencies]


@dataclass(frozen=True)
class AlleleFrequencies:
    """One gene in one group: alleles (knowledge-base names) and their frequencies (sum 1)."""

    gene: str
    group: str
    alleles: tuple[str, ...]
    frequencies: tuple[float, ...]
    citation: str  # source title and version of the numbers


class FrequencyDataError(RuntimeError):
    """The shipped frequency file is inconsistent (a packaging bug, not a user's mistake)."""


def is_known_allele(gene: str, allele: str) -> bool:
    """Whether the knowledge base can assign ``allele`` of ``gene`` a function: a listed star
    allele, or (activity-score genes) a copy-number or tandem allele of listed ones."""
    definition = gene_definition(gene)
    if allele in definition.allele_order:
        return True
    if definition.phenotype_method != "Score":
        return False
    try:
        haplotype_score(gene, allele)
    except KeyError:
        return False
    return True


def allele_sort_key(gene: str, allele: str) -> tuple[int, str]:
    """Knowledge-base order, a copy-number allele right after its base allele (``*1``, ``*1x2``,
    ``*1x≥3``, ``*2`` ...)."""
    order = gene_definition(gene).allele_order
    if allele in order:
        return order[allele], ""
    base = allele.split("+")[0].split("x")[0]
    return order.get(base, len(order)), allele


def _check_gene(gene: str, entry: GeneFrequencies, data: FrequencyFile) -> None:
    for source in [entry.source, *entry.allele_sources.values()]:
        if source not in data.sources:
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: unknown source {source!r}")
    for group in [*entry.groups, *entry.excluded_groups]:
        if group not in data.groups:
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: unknown group {group!r}")
    if not is_known_allele(gene, entry.reference_allele):
        raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: reference {entry.reference_allele!r} not in the knowledge base")
    for group, alleles in entry.groups.items():
        outside = entry.outside_knowledge_base.get(group, {})
        for allele, value in [*alleles.items(), *outside.items()]:
            if not 0.0 < value <= 1.0:
                raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group} {allele}: frequency {value} not in (0, 1]")
        for allele in alleles:
            if not is_known_allele(gene, allele):
                raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group}: allele {allele!r} not in the knowledge base")
        for allele in outside:
            if is_known_allele(gene, allele) or allele in alleles:
                raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group}: {allele!r} is in the knowledge base, not outside it")
        left_out = sum(outside.values())
        if left_out > OUTSIDE_LIMIT:
            raise FrequencyDataError(
                f"{FREQUENCY_RESOURCE}: {gene} {group}: alleles outside the knowledge base weigh {left_out:.4f} > {OUTSIDE_LIMIT}: exclude the group"
            )
        total = sum(alleles.values()) + left_out
        listed = entry.reference_rule == "listed"
        if listed and (entry.reference_allele not in alleles or abs(total - 1.0) > SUM_TOLERANCE):
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group}: listed frequencies sum to {total:.8f}, not 1")
        if not listed and (entry.reference_allele in alleles or total > 1.0 + SUM_TOLERANCE):
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group}: non-reference alleles sum to {total:.8f} > 1")


@lru_cache(maxsize=1)
def frequency_data() -> FrequencyFile:
    """The validated frequency file (cached)."""
    text = resources.files("pgxtwin.knowledge.data").joinpath(FREQUENCY_RESOURCE).read_text(encoding="utf-8")
    try:
        data = FrequencyFile.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {exc}") from None
    for gene, entry in data.genes.items():
        _check_gene(gene, entry, data)
    return data


def groups() -> tuple[str, ...]:
    """CPIC biogeographic groups in snake case, in the file's (CPIC's) order."""
    return tuple(frequency_data().groups)


def cpic_group_name(group: str) -> str:
    """``east_asian`` -> ``East Asian``."""
    return frequency_data().groups[group]


def frequency_genes() -> tuple[str, ...]:
    """Genes with frequency data for at least one group."""
    return tuple(frequency_data().genes)


def groups_with_data(gene: str) -> tuple[str, ...]:
    """Groups for which ``gene`` has sourced frequencies (empty for an unknown gene)."""
    entry = frequency_data().genes.get(gene)
    return tuple(g for g in groups() if entry is not None and g in entry.groups)


def missing_reason(gene: str, group: str) -> str:
    """Why ``gene`` has no frequencies for ``group`` (for one-line error messages)."""
    entry = frequency_data().genes.get(gene)
    if entry is None:
        return "no sourced allele frequencies for this gene"
    return entry.excluded_groups.get(group, "no sourced allele frequencies for this group")


def allele_frequencies(gene: str, group: str) -> AlleleFrequencies:
    """Frequencies of ``gene`` in ``group``, the reference allele completed by CPIC's rule.

    Alleles outside the knowledge base are left out and the others scaled to sum 1 (at most by
    1/(1 - OUTSIDE_LIMIT)).  Raises ``KeyError`` when the gene or group has no data (see :func:`missing_reason`)."""
    data = frequency_data()
    entry = data.genes[gene]
    listed = dict(entry.groups[group])
    if entry.reference_rule == "remainder":
        # CPIC's reference-type allele frequency is 1 - the sum of the other alleles
        left_out = sum(entry.outside_knowledge_base.get(group, {}).values())
        listed = {entry.reference_allele: max(0.0, 1.0 - left_out - sum(listed.values())), **listed}
    total = sum(listed.values())
    alleles = tuple(sorted(listed, key=lambda a: allele_sort_key(gene, a)))
    cited = {entry.source, *(entry.allele_sources[a] for a in alleles if a in entry.allele_sources)}
    citation = "; ".join(f"{data.sources[s].title} ({data.sources[s].version})" for s in sorted(cited))
    return AlleleFrequencies(
        gene=gene,
        group=group,
        alleles=alleles,
        frequencies=tuple(listed[a] / total for a in alleles),  # float rounding and left-out alleles
        citation=citation,
    )
