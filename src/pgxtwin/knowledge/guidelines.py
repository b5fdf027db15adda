"""CPIC guideline knowledge: which genes a drug's guideline covers, the recommendation for a
patient's phenotypes (pypgx's cpic- and recommendation-tables), and HLA genotype-only risks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .tables import read_table

Action = Literal["avoid", "adjust_dose", "standard", "monitor", "no_recommendation"]


@dataclass(frozen=True)
class Guideline:
    gene: str
    drug: str
    rxnorm: str | None
    url: str | None
    cpic_level: str | None
    pmids: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    drug: str
    phenotypes: dict[str, str]  # gene -> phenotype the row matched
    text: str
    action: Action
    guideline: Guideline | None


class HlaRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    gene: str
    allele: str
    drugs: list[str]
    action: Literal["avoid"]
    text: str
    source: str = Field(min_length=20)


class _HlaRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal[1]
    rules: list[HlaRule]


def _na(value: str) -> str | None:
    return None if value in ("", "N/A", "None") else value


@lru_cache(maxsize=1)
def _guidelines() -> dict[str, tuple[Guideline, ...]]:
    out: dict[str, list[Guideline]] = {}
    for row in read_table("cpic-table.csv"):
        pmids = tuple(p for p in (row["PMID"] or "").split(";") if p)
        entry = Guideline(row["Gene"], row["Drug"].lower(), _na(row["RxNorm"]), _na(row["Guideline"]), _na(row["CPICLevel"]), pmids)
        out.setdefault(entry.drug, []).append(entry)
    return {drug: tuple(entries) for drug, entries in out.items()}


def guidelines_for(drug: str) -> tuple[Guideline, ...]:
    """CPIC gene-drug pairs for ``drug`` (lower-case name)."""
    return _guidelines().get(drug.lower(), ())


def drug_for_rxnorm(code: str) -> str | None:
    """Drug name of an RxNorm ingredient CUI in the CPIC table."""
    for drug, entries in _guidelines().items():
        if any(e.rxnorm == code for e in entries):
            return drug
    return None


# Order matters: the first pattern that matches decides.  CPIC's wording is consistent enough
# for these cues; anything unmatched is kept as "monitor" so that a human reads it.
_ACTION_CUES: tuple[tuple[Action, re.Pattern[str]], ...] = (
    ("avoid", re.compile(r"\b(avoid|contraindicated|not recommended|prescribe an alternative)", re.I)),
    # "consider a 50% reduction ... or select alternative" asks for a dose change first
    ("adjust_dose", re.compile(r"(reduc|decreas|increas|lower|higher|\d+\s?%|limit dose|titrat)", re.I)),
    ("avoid", re.compile(r"(select an? alternative|use an alternative|consider an alternative|"
                         r"alternative (?:statin|agent|drug|antiplatelet))", re.I)),
    ("standard", re.compile(r"(standard|label[- ]recommended|recommended starting dose|normal starting dose|"
                            r"desired starting dose|no change|usual)", re.I)),
)


def classify(text: str | None) -> Action:
    """The kind of action a CPIC recommendation text asks for."""
    if not text:
        return "no_recommendation"
    for action, pattern in _ACTION_CUES:
        if pattern.search(text):
            return action
    return "monitor"


@lru_cache(maxsize=1)
def _recommendation_rows() -> dict[str, tuple[dict[str, str], ...]]:
    out: dict[str, list[dict[str, str]]] = {}
    for row in read_table("recommendation-table.csv"):
        out.setdefault(row["Drug"].lower(), []).append(row)
    return {drug: tuple(rows) for drug, rows in out.items()}


def recommendation(drug: str, phenotypes: dict[str, str]) -> Recommendation | None:
    """The CPIC recommendation for these phenotypes (None when no row covers them)."""
    drug = drug.lower()
    best = None
    for row in _recommendation_rows().get(drug, ()):
        genes = [(row["Gene1"], row["Phenotype1"])]
        if _na(row["Gene2"]):
            genes.append((row["Gene2"], row["Phenotype2"]))
        wanted = {g: p for g, p in genes if _na(p)}
        if not wanted or any(phenotypes.get(g) != p for g, p in wanted.items()):
            continue
        # prefer the row using the most genes (combined CYP2C9+HLA-B rows, etc.)
        if best is None or len(wanted) > len(best[0]):
            best = (wanted, row)
    if best is None:
        return None
    wanted, row = best
    text = _na(row["Recommendation"]) or ""
    guideline = next((g for g in guidelines_for(drug) if g.gene in wanted), None)
    return Recommendation(drug, wanted, text, classify(text), guideline)


@lru_cache(maxsize=1)
def hla_rules() -> tuple[HlaRule, ...]:
    raw = resources.files("pgxtwin.knowledge.data").joinpath("hla_rules.yaml").read_text(encoding="utf-8")
    return tuple(_HlaRules.model_validate(yaml.safe_load(raw)).rules)


def hla_risks(drug: str, hla_diplotypes: dict[str, str]) -> list[HlaRule]:
    """HLA rules that fire for ``drug`` given {"HLA-B": "*57:01/*08:01", ...}."""
    hits = []
    for rule in hla_rules():
        if drug.lower() not in rule.drugs:
            continue
        diplotype = hla_diplotypes.get(rule.gene)
        if diplotype is None:
            continue
        alleles = [a.strip() for a in diplotype.split("/")]
        # "*57:01:01" carries "*57:01": compare on the allele's first two fields
        if any(":".join(a.split(":")[:2]) == rule.allele for a in alleles):
            hits.append(rule)
    return hits
