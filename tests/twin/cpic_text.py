"""Test helper: the numeric starting-dose adjustment in a CPIC (or label) recommendation text.

Only what the guideline cross-check needs (tests/twin/test_guideline_crosscheck.py); not part of
the package.  The result is a multiple of the standard (label) starting dose: ``low``-``high``
(equal for a point value), or ``kind`` "standard", "avoid" or "none" when the text gives no
number.  Explicit daily doses ("400 mg/day") are turned into multiples with ``standard_daily_mg``;
caps ("should not exceed 0.3 mg/kg/day", "<=20mg") are kept as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["multiple", "standard", "avoid", "none"]

_NUM = r"(\d+(?:\.\d+)?)"
_RANGE = rf"{_NUM}\s*%?\s*(?:-|–|to)\s*{_NUM}"  # "25-50", "30%-80", "1.5 to 2"


@dataclass(frozen=True)
class DoseAdjustment:
    kind: Kind
    low: float | None = None  # multiple of the standard starting dose
    high: float | None = None
    phrase: str = ""  # the words the number came from
    cap: str | None = None  # an upper limit stated in the text, verbatim

    @property
    def is_range(self) -> bool:
        return self.low is not None and self.high is not None and self.low != self.high

    def describe(self) -> str:
        if self.kind != "multiple":
            return self.kind
        assert self.low is not None and self.high is not None
        text = f"x{self.low:.3g}" if not self.is_range else f"x{self.low:.3g}-{self.high:.3g}"
        return text + (f" (cap {self.cap})" if self.cap else "")


def _pct(value: str) -> float:
    return float(value) / 100.0


def _reduction(m: re.Match[str]) -> tuple[float, float]:
    if m.group("b") is not None:  # a range of reductions: 25-50% -> 0.50-0.75 of the dose
        return 1.0 - _pct(m.group("b")), 1.0 - _pct(m.group("a"))
    return (1.0 - _pct(m.group("a")),) * 2


def _of_dose(m: re.Match[str]) -> tuple[float, float]:
    b = m.group("b") or m.group("a")
    return _pct(m.group("a")), _pct(b)


def _times(m: re.Match[str]) -> tuple[float, float]:
    b = m.group("b") or m.group("a")
    return float(m.group("a")), float(b)


def _increase(m: re.Match[str]) -> tuple[float, float]:
    b = m.group("b") or m.group("a")
    return 1.0 + _pct(m.group("a")), 1.0 + _pct(b)


def _fold(m: re.Match[str]) -> tuple[float, float]:
    return (1.0 / float(m.group("a")),) * 2


_PCT_OR_RANGE = rf"(?P<a>\d+(?:\.\d+)?)\s*%?\s*(?:(?:-|–|to)\s*(?P<b>\d+(?:\.\d+)?)\s*)?%"
# (pattern, converter) pairs; the match earliest in the text wins (CPIC states the starting dose
# first and later titration advice, e.g. "... or 25-50% of the maximum recommended dose")
_RELATIVE: tuple[tuple[re.Pattern[str], object], ...] = (
    # "Reduce starting dose by 50%", "reduce daily dose by 25-50%"
    (re.compile(rf"\breduc\w*\s+(?:the\s+)?(?:starting\s+|daily\s+|initial\s+)*dose\s+by\s+{_PCT_OR_RANGE}", re.I), _reduction),
    # "Consider a 50% reduction of recommended starting dose", "~25% dose reduction"
    (re.compile(rf"(?:~|approximately\s+)?{_PCT_OR_RANGE}\s+(?:dose\s+)?reduction", re.I), _reduction),
    # "reduction of 50%"
    (re.compile(rf"\breduction\s+of\s+{_PCT_OR_RANGE}", re.I), _reduction),
    # "Initiate therapy with 25-50% of the lowest recommended starting dose", "(30%-80% of normal dose)"
    (re.compile(rf"{_PCT_OR_RANGE}\s+of\s+(?:the\s+)?(?:lowest\s+|recommended\s+|normal\s+|standard\s+|usual\s+)*"
                r"(?:starting\s+)?dose", re.I), _of_dose),
    # "Increase starting dose 1.5 to 2 times recommended starting dose"
    (re.compile(r"\bincreas\w*\s+(?:the\s+)?(?:starting\s+|daily\s+)*dose\s+(?:by\s+)?"
                r"(?P<a>\d+(?:\.\d+)?)\s*(?:(?:-|–|to)\s*(?P<b>\d+(?:\.\d+)?)\s*)?(?:times|-fold|fold)", re.I), _times),
    # "Increase starting daily dose by 100%", "by 50-100%"
    (re.compile(rf"\bincreas\w*\s+(?:the\s+)?(?:starting\s+|daily\s+)*dose\s+by\s+{_PCT_OR_RANGE}", re.I), _increase),
    # "reduce daily dose by 10-fold"
    (re.compile(r"\breduc\w*\s+(?:the\s+)?(?:starting\s+|daily\s+)*dose\s+by\s+(?P<a>\d+(?:\.\d+)?)\s*-?\s*fold", re.I), _fold),
)
# explicit daily doses: "decreased dose of 400 mg/day", "400 or 200 mg/day", "1 mg once daily"
_ABSOLUTE = re.compile(
    r"\b(?:decreased|reduced|increased|lower|maintenance)\s+(?:dose|dosage)\s+(?:of\s+|[^.]{0,80}?\bis\s+)?"
    r"(?P<doses>\d+(?:\.\d+)?(?:\s*(?:or|and|,|-|to)\s*\d+(?:\.\d+)?)*)\s*mg\s*(?:taken\s+orally\s+)?"
    r"(?:/\s*day|per\s+day|(?:once\s+)?daily)",
    re.I,
)
_CAP = re.compile(
    r"(?:should\s+not\s+exceed|not\s+to\s+exceed|must\s+not\s+exceed|maximum(?:\s+dose)?\s+of|<=|≤)\s*"
    r"(?P<cap>\d+(?:\.\d+)?\s*mg(?:\s*/\s*(?:kg|m2|m²))?(?:\s*/\s*day)?)",
    re.I,
)
_AVOID = re.compile(r"\b(avoid\s+use|contraindicated|do\s+not\s+use|not\s+recommended|select\s+(?:an\s+)?alternative|"
                    r"consider\s+(?:an\s+)?alternative|choose\s+an\s+alternative|prescribe\s+an\s+alternative|"
                    r"recommend\s+alternative)", re.I)
_STANDARD = re.compile(r"(recommended\s+starting\s+dose|standard\s+(?:starting\s+)?(?:daily\s+)?(?:dose|dosing)|"
                       r"label[- ]recommended|normal\s+starting\s+dose|no\s+indication\s+to\s+change\s+dose|"
                       r"standard\s+recommended\s+dose|standard\s+of\s+care\s+dosing)", re.I)


def parse_adjustment(text: str | None, standard_daily_mg: float | None = None) -> DoseAdjustment:
    """The starting-dose multiple a recommendation text asks for (see the module docstring)."""
    if not text:
        return DoseAdjustment("none")
    cap_match = _CAP.search(text)
    cap = re.sub(r"\s+", "", cap_match.group("cap")) if cap_match else None
    hits = []
    for pattern, convert in _RELATIVE:
        m = pattern.search(text)
        if m:
            hits.append((m.start(), convert(m), m.group(0)))  # type: ignore[operator]
    m = _ABSOLUTE.search(text)
    if m and standard_daily_mg:
        doses = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", m.group("doses"))]
        hits.append((m.start(), (min(doses) / standard_daily_mg, max(doses) / standard_daily_mg), m.group(0)))
    if hits:
        _, (low, high), phrase = min(hits, key=lambda h: h[0])
        return DoseAdjustment("multiple", round(low, 6), round(high, 6), phrase.strip(), cap)
    if _AVOID.search(text):
        return DoseAdjustment("avoid", phrase=_AVOID.search(text).group(0), cap=cap)  # type: ignore[union-attr]
    if _STANDARD.search(text):
        return DoseAdjustment("standard", 1.0, 1.0, _STANDARD.search(text).group(0), cap)  # type: ignore[union-attr]
    return DoseAdjustment("none", cap=cap)


AGREEMENT = 0.25  # +-25% of the guideline's multiple; a range is widened by 25% on each side


def agreement_bounds(adj: DoseAdjustment) -> tuple[float, float]:
    """The model's dose multiple agrees with ``adj`` inside these bounds (x0.75 low, x1.25 high)."""
    if adj.low is None or adj.high is None:
        raise ValueError(f"no numeric adjustment in {adj!r}")
    return adj.low * (1.0 - AGREEMENT), adj.high * (1.0 + AGREEMENT)


def agrees(model_ratio: float, adj: DoseAdjustment) -> bool:
    low, high = agreement_bounds(adj)
    return low <= model_ratio <= high
