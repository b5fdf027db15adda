"""Run PharmCAT's own test cases (../shared/validation/pharmcat) through our caller.

Comparison rules (PharmCAT display conventions, not per-case tuning):
- single-position genes: PharmCAT labels ``rsX reference (B)`` / ``rsX variant (B)`` are the
  knowledge base's ``Reference`` / ``rsX`` alleles;
- ``X (heterozygous)`` is PharmCAT's display of ``Reference/X``;
- a diplotype call agrees when our top-scoring diplotypes equal PharmCAT's set (order-free);
- an allele list (unphased DPYD) agrees when our detected alleles equal PharmCAT's;
- an expected no-call agrees with our ``no_call``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "validation" / "pharmcat"
_SNP_LABEL = re.compile(r"^(rs\d+) (reference|variant) \(\w+\)$")


def load_cases() -> list[dict]:
    return json.loads((SHARED / "cases.json").read_text())


# PharmCAT's report labels for a reference allele whose matcher name differs (README of the set)
_REFERENCE_LABELS = {"ivacaftor non-responsive CFTR sequence"}


def _allele(name: str) -> str:
    if name in _REFERENCE_LABELS:
        return "Reference"
    match = _SNP_LABEL.match(name)
    if match:
        return "Reference" if match.group(2) == "reference" else match.group(1)
    return name


def _pair(diplotype: str) -> tuple[str, ...]:
    if diplotype.endswith(" (heterozygous)"):
        return tuple(sorted(("Reference", _allele(diplotype.removesuffix(" (heterozygous)")))))
    return tuple(sorted(_allele(a) for a in diplotype.split("/")))


@dataclass
class Outcome:
    case_id: str
    gene: str
    agrees: bool
    expected: list[str]
    observed: list[str]
    status: str


def evaluate(case: dict, result) -> Outcome:
    gene = result.genes.get(case["gene"])
    expected = case["expected"]
    if gene is None:
        return Outcome(case["id"], case["gene"], False, expected, ["<gene not callable>"], "missing")
    if case["expected_type"] == "allele_list" and len(expected) > 1 or (
        case["expected_type"] == "allele_list" and gene.detected_alleles
    ):
        observed = gene.detected_alleles
        exp = expected
        if len(expected) == 1 and expected[0].endswith(" (heterozygous)"):
            exp = ["Reference", expected[0].removesuffix(" (heterozygous)")]
        agrees = sorted(map(_allele, exp)) == sorted(observed)
        return Outcome(case["id"], case["gene"], agrees, expected, observed, gene.status)
    if not expected:
        return Outcome(case["id"], case["gene"], gene.status == "no_call", expected, gene.diplotypes, gene.status)
    top = [d for d, s in zip(gene.diplotypes, gene.scores) if s == gene.scores[0]] if gene.scores else gene.diplotypes
    observed_set = {_pair(d) for d in top}
    agrees = gene.status != "no_call" and observed_set == {_pair(d) for d in expected}
    return Outcome(case["id"], case["gene"], agrees, expected, top, gene.status)
