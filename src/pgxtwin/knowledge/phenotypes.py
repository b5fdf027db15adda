"""Diplotype -> phenotype and activity-score -> phenotype rules (pypgx tables, from CPIC), with
copy-number (``*1x2``, ``*4x≥3``) and tandem (``*36+*10``) alleles scored by CPIC's rule.

One code path for every caller: a real patient's diplotype, an outside call and a virtual
patient in a population all go through :func:`phenotype_of`.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from functools import lru_cache

from .alleles import gene_definition
from .tables import read_table

INDETERMINATE = "Indeterminate"
NO_RULE = "n/a"  # the knowledge base has no phenotype rule for this gene

_OPS = {"<=": operator.le, "<": operator.lt, "==": operator.eq, ">=": operator.ge, ">": operator.gt}
_UNBOUNDED = 1e9  # a score above every CPIC threshold
_TERM = re.compile(r"^\s*(?:([0-9.]+)\s*(<=|<|==)\s*)?score\s*(?:(<=|<|==)\s*([0-9.]+))?\s*$")


@dataclass(frozen=True)
class PhenotypeCall:
    phenotype: str
    activity_score: float | None


@lru_cache(maxsize=1)
def _diplotype_tables() -> dict[str, dict[frozenset[tuple[str, int]], str]]:
    tables: dict[str, dict[frozenset[tuple[str, int]], str]] = {}
    for row in read_table("diplotype-table.csv"):
        tables.setdefault(row["Gene"], {})[_pair_key(*row["Diplotype"].split("/", 1))] = row["Phenotype"]
    return tables


def _diplotype_table(gene: str) -> dict[frozenset[tuple[str, int]], str]:
    return _diplotype_tables().get(gene, {})


def _pair_key(a: str, b: str) -> frozenset[tuple[str, int]]:
    # multiset of the two alleles, order-free
    return frozenset({(a, 1), (b, 2)} if a == b else {(a, 1), (b, 1)})


@lru_cache(maxsize=None)
def _equations(gene: str) -> tuple[tuple[str, tuple[tuple[float | None, str | None, str | None, float | None], ...]], ...]:
    rules = []
    for row in read_table("equation-table.csv"):
        if row["Gene"] != gene:
            continue
        terms = []
        for part in row["Equation"].replace("score", " score ").split(" and "):
            match = _TERM.match(part.replace(" score ", "score"))
            if not match:
                raise ValueError(f"equation-table.csv: cannot parse {row['Equation']!r} for {gene}")
            low, op1, op2, high = match.groups()
            terms.append((float(low) if low else None, op1, op2, float(high) if high else None))
        rules.append((row["Phenotype"], tuple(terms)))
    return tuple(rules)


def phenotype_from_score(gene: str, score: float) -> str:
    """CPIC activity-score -> phenotype (e.g. CYP2C9 1.5 -> Intermediate Metabolizer)."""
    for phenotype, terms in _equations(gene):
        ok = True
        for low, op1, op2, high in terms:
            if low is not None and not _OPS[op1](low, score):
                ok = False
            if high is not None and not _OPS[op2](score, high):
                ok = False
        if ok:
            return phenotype
    return INDETERMINATE


# PharmVar/CPIC structural notation: "*1x2" (two copies), "*2x≥3" (three or more copies),
# "*36+*10" (tandem: one haplotype carrying both genes).
_COPIES = re.compile(r"^(?P<base>.+?)x(?P<at_least>≥|>=)?(?P<copies>[0-9]+)$")


@dataclass(frozen=True)
class HaplotypeScore:
    """Activity value of one haplotype: ``value`` exactly, or at least ``value`` when
    ``open_ended`` (a "≥N copies" allele of a functional gene copy)."""

    value: float
    open_ended: bool = False


def haplotype_score(gene: str, allele: str, assembly: str = "GRCh38") -> HaplotypeScore | None:
    """Activity value of a star allele, a copy-number allele or a tandem (None when a part has
    no activity value, e.g. uncertain function).

    A name the knowledge base defines is looked up as is (UGT1A1 "*80+*28", DPYD "c.1905+1G>A"
    are single alleles there).  Otherwise, as in CPIC's CYP2D6 genotype-to-phenotype rule
    (Caudle et al. 2020, PMID 31647186; the same rule as pypgx's ``predict_score``): a duplicated
    allele ``*AxN`` has N times the activity value of ``*A`` and a tandem ``*A+*B`` the sum of
    its parts.  ``*Ax≥N`` is at least N times the value.  Raises ``KeyError`` for a name that is
    neither."""
    definition = gene_definition(gene, assembly)
    try:
        value = definition.allele(allele).activity_value
        return None if value is None else HaplotypeScore(float(value))
    except KeyError:
        if "+" not in allele and _COPIES.match(allele) is None:
            raise
    total, open_ended = 0.0, False
    for part in allele.split("+"):
        match = _COPIES.match(part)
        base, copies = (match["base"], int(match["copies"])) if match else (part, 1)
        if copies < 1:
            raise KeyError(allele)
        value = definition.allele(base).activity_value  # KeyError for an unknown base allele
        if value is None:
            return None
        total += float(value) * copies
        open_ended |= bool(match and match["at_least"]) and value > 0
    return HaplotypeScore(total, open_ended)


def activity_score(gene: str, allele1: str, allele2: str, assembly: str = "GRCh38") -> float | None:
    """Sum of the two alleles' activity values, or None when either has none or the sum is
    only a lower bound (a "≥N copies" allele)."""
    parts = [haplotype_score(gene, a, assembly) for a in (allele1, allele2)]
    if any(p is None or p.open_ended for p in parts):
        return None
    return float(sum(p.value for p in parts))  # type: ignore[union-attr]


def phenotype_of(gene: str, allele1: str, allele2: str, assembly: str = "GRCh38") -> PhenotypeCall:
    """Phenotype of a diplotype by the gene's CPIC rule (activity score or diplotype table).

    Copy-number and tandem alleles are scored by :func:`haplotype_score`.  When a "≥N copies"
    allele makes the score a lower bound, the phenotype is the bound's if every higher score
    has the same phenotype (CPIC's top class is open-ended: *1x≥3/*1 is an ultrarapid
    metabolizer whatever the copy number), otherwise Indeterminate; the score is then None."""
    definition = gene_definition(gene, assembly)
    if definition.phenotype_method == "Score":
        parts = [haplotype_score(gene, a, assembly) for a in (allele1, allele2)]
        if any(p is None for p in parts):
            return PhenotypeCall(INDETERMINATE, None)
        score = float(sum(p.value for p in parts))  # type: ignore[union-attr]
        phenotype = phenotype_from_score(gene, score)
        if any(p.open_ended for p in parts):  # type: ignore[union-attr]
            bounded = phenotype == phenotype_from_score(gene, score + _UNBOUNDED)
            return PhenotypeCall(phenotype if bounded else INDETERMINATE, None)
        return PhenotypeCall(phenotype, score)
    if definition.phenotype_method == "Diplotype":
        found = _diplotype_table(gene).get(_pair_key(allele1, allele2))
        return PhenotypeCall(found if found else INDETERMINATE, None)
    return PhenotypeCall(NO_RULE, None)


@lru_cache(maxsize=None)
def phenotype_names(gene: str) -> tuple[str, ...]:
    """Phenotype terms the knowledge base uses for ``gene`` (for validating user input)."""
    names = [r["Phenotype"] for r in read_table("phenotype-table.csv") if r["Gene"] == gene]
    names += [p for p, _ in _equations(gene) if p not in names]
    names += sorted({p for p in _diplotype_table(gene).values()} - set(names))
    return tuple(names)


def rs4149056_fallback(variant_copies: int) -> PhenotypeCall:
    """SLCO1B1 function from the rs4149056 (c.521T>C) genotype alone.

    Source: CPIC guideline for statins and SLCO1B1, ABCG2, CYP2C9 (Cooper-DeHoff et al. 2022,
    PMID 35152405), SLCO1B1 phenotype assignment when only c.521T>C is genotyped:
    T/T normal, T/C decreased, C/C poor function.
    """
    return PhenotypeCall(("Normal Function", "Decreased Function", "Poor Function")[variant_copies], None)
