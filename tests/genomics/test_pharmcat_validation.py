"""Agreement with PharmCAT's own test cases (../shared/validation/pharmcat, 549 cases).

Target: >= 98% agreement.  Cases where the two knowledge bases disagree (pypgx 0.27.0 tables +
our overlay vs PharmCAT 3.1.1's CPIC/PharmVar definitions of 2025-11-05) are listed below, each
with the reason; they are still run, and the test fails if one of them starts to agree (so the
list cannot silently hide a case).  Everything else counts against the 98% target.
"""

from __future__ import annotations

import collections

import pytest

from pgxtwin.genomics.caller import call_vcf

from .pharmcat_cases import SHARED, evaluate, load_cases

pytestmark = pytest.mark.skipif(not (SHARED / "cases.json").is_file(), reason="../shared/validation/pharmcat is absent")

# --- knowledge-base disagreements (pypgx vs PharmCAT), documented case by case ---------------
NAT2_REASON = (
    "pypgx 0.27.0 ships NAT2 in the legacy nomenclature (18 alleles, *4 reference, 17 positions);"
    " PharmCAT uses PharmVar's 2024 NAT2 redesignation (59 alleles, *1 reference, 47 positions)"
)
KB_DIFFERENCES: dict[str, str] = {
    "CYP3A5-012-res-s1s3rs776746rs55965422het": "pypgx defines CYP3A5*5 (rs55965422); CPIC/PharmCAT do not, so PharmCAT ignores the position",
    "CYP3A5-013-res-s1s3rs776746rs55965422rs28383479het": "pypgx defines CYP3A5*5 (rs55965422); CPIC/PharmCAT do not",
    "CYP3A5-014-res-s3s3rs55965422het": "pypgx defines CYP3A5*5 (rs55965422); CPIC/PharmCAT do not",
    "CYP3A5-015-res-s3s5-homozygous": "pypgx defines CYP3A5*5 (rs55965422); CPIC/PharmCAT do not",
    "SLCO1B1-009-testSlco1b1Test5": "pypgx names PharmVar's *45.002 as *46 (legacy SLCO1B1 naming); PharmCAT reports *45",
    "SLCO1B1-013-res-SLCO1B1_s15_s45_t1": "pypgx names PharmVar's *45.002 as *46; PharmCAT reports *45",
    "SLCO1B1-018-res-SLCO1B1_s37_s40_t1": "SLCO1B1 *52, *56, *57 (PharmVar 2023) are absent from pypgx",
    "CYP2B6-002-testCyp2b6star1star34AllMatch": "CYP2B6 *33/*36 candidates: pypgx's *36 is a structural (hybrid) allele, not matchable from SNVs",
}


@pytest.fixture(scope="module")
def outcomes():
    results = []
    for case in load_cases():
        result = next(call_vcf(SHARED / case["vcf"], genes=[case["gene"]]))
        results.append(evaluate(case, result))
    return results


def _documented(outcome) -> str | None:
    if outcome.gene == "NAT2":
        return NAT2_REASON
    return KB_DIFFERENCES.get(outcome.case_id)


def test_agreement_with_pharmcat(outcomes):
    documented = [o for o in outcomes if _documented(o)]
    counted = [o for o in outcomes if not _documented(o)]
    agree = sum(o.agrees for o in counted)
    overall = sum(o.agrees for o in outcomes)
    failures = [o for o in counted if not o.agrees]
    by_gene = collections.Counter(o.gene for o in failures)
    print(
        f"\nPharmCAT agreement: {overall}/{len(outcomes)} = {overall / len(outcomes):.1%} overall;"
        f" {agree}/{len(counted)} = {agree / len(counted):.1%} where the knowledge bases agree"
        f" ({len(documented)} cases documented as knowledge-base differences). Failures by gene: {dict(by_gene)}"
    )
    for o in failures:
        print(f"  {o.case_id}: status={o.status} expected={o.expected} observed={o.observed[:4]}")
    assert agree / len(counted) >= 0.98


def test_documented_differences_still_differ(outcomes):
    """A documented case that now agrees must leave the list (no stale excuses)."""
    stale = [o.case_id for o in outcomes if o.gene != "NAT2" and o.case_id in KB_DIFFERENCES and o.agrees]
    assert stale == []
