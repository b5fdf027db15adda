"""Star-allele frequencies per CPIC biogeographic group (``data/allele_frequencies.yaml``).

The numbers are CPIC's (see the file's ``sources``); this module only validates them against the
knowledge base and completes the reference allele by CPIC's rule (1 - the sum of the others)
where the transcription lacks its row.  Groups are named in snake case (``east_asian``); the
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

FREQUENCY_RESOURCE = "allele_frequencies.yaml"
SUM_TOLERANCE = 1e-6  # published frequencies are given to 8 significant digits


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
    groups: dict[str, dict[str, float]]

    @model_validator(mode="after")
    def _groups_disjoint(self) -> "GeneFrequencies":
        both = set(self.groups) & set(self.excluded_groups)
        if both:
            raise ValueError(f"groups both given and excluded: {sorted(both)}")
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


def _check_gene(gene: str, entry: GeneFrequencies, data: FrequencyFile) -> None:
    known = {a.name for a in gene_definition(gene).alleles}
    for source in [entry.source, *entry.allele_sources.values()]:
        if source not in data.sources:
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: unknown source {source!r}")
    for group in [*entry.groups, *entry.excluded_groups]:
        if group not in data.groups:
            raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: unknown group {group!r}")
    if entry.reference_allele not in known:
        raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene}: reference {entry.reference_allele!r} not in the knowledge base")
    for group, alleles in entry.groups.items():
        for allele, value in alleles.items():
            if allele not in known:
                raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group}: allele {allele!r} not in the knowledge base")
            if not 0.0 < value <= 1.0:
                raise FrequencyDataError(f"{FREQUENCY_RESOURCE}: {gene} {group} {allele}: frequency {value} not in (0, 1]")
        total = sum(alleles.values())
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

    Raises ``KeyError`` when the gene or group has no data (see :func:`missing_reason`)."""
    data = frequency_data()
    entry = data.genes[gene]
    listed = dict(entry.groups[group])
    if entry.reference_rule == "remainder":
        # CPIC's reference-type allele frequency is 1 - the sum of the other alleles
        listed = {entry.reference_allele: max(0.0, 1.0 - sum(listed.values())), **listed}
    total = sum(listed.values())
    order = gene_definition(gene).allele_order
    alleles = tuple(sorted(listed, key=order.__getitem__))
    cited = {entry.source, *(entry.allele_sources[a] for a in alleles if a in entry.allele_sources)}
    citation = "; ".join(f"{data.sources[s].title} ({data.sources[s].version})" for s in sorted(cited))
    return AlleleFrequencies(
        gene=gene,
        group=group,
        alleles=alleles,
        frequencies=tuple(listed[a] / total for a in alleles),  # removes float rounding only
        citation=citation,
    )
