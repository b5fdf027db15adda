"""Dose and duration strings with units, parsed by pint into the engine's units (mg, h).

Examples: ``parse_dose("75 mg")``, ``parse_dose("0.1 mg/kg").to_mg(weight_kg=70)``,
``parse_dose("5 mg/m2").to_mg(bsa_m2=1.8)``, ``parse_duration("30 min") == 0.5``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import pint

__all__ = ["Dose", "DoseBasis", "parse_dose", "parse_duration"]


@lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    # One registry per process: building it costs ~0.15 s and quantities from different registries don't mix.
    return pint.UnitRegistry()


# Clinical spellings pint does not know: "m2"/"m²" for body-surface area, "mcg" for microgram.
_REWRITES = (
    (re.compile(r"(?<=[a-zA-Z])\s*(?:2|²)(?![0-9])"), "**2"),
    (re.compile(r"\bmcg\b"), "ug"),
)


class DoseBasis(str, Enum):
    """What a dose amount is relative to."""

    ABSOLUTE = "absolute"  # mg
    PER_KG = "per_kg"  # mg per kg body weight
    PER_M2 = "per_m2"  # mg per m^2 body-surface area


@dataclass(frozen=True, slots=True)
class Dose:
    """A parsed dose: ``amount`` in mg, mg/kg or mg/m² according to ``basis``."""

    amount: float
    basis: DoseBasis = DoseBasis.ABSOLUTE

    def to_mg(self, weight_kg: float | None = None, bsa_m2: float | None = None) -> float:
        """Absolute amount in mg; weight (kg) or body-surface area (m²) is required for relative doses."""
        if self.basis is DoseBasis.ABSOLUTE:
            return self.amount
        if self.basis is DoseBasis.PER_KG:
            return self.amount * _positive(weight_kg, "weight_kg", "a per-kg dose needs the body weight in kg")
        return self.amount * _positive(bsa_m2, "bsa_m2", "a per-m² dose needs the body-surface area in m²")


def _positive(value: float | None, name: str, why: str) -> float:
    if value is None:
        raise ValueError(f"{name} is missing: {why}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive finite number")
    return float(value)


def _quantity(text: str, what: str, example: str) -> pint.Quantity:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} {text!r}: expected a non-empty string such as {example!r}")
    normalised = text.strip()
    for pattern, repl in _REWRITES:
        normalised = pattern.sub(repl, normalised)
    try:
        q = _registry().Quantity(normalised)
    except Exception as exc:  # noqa: BLE001 - pint's parser raises assorted types (TokenError, AssertionError, ...)
        raise ValueError(f"{what} {text!r} cannot be parsed: {exc}") from None
    if not isinstance(q, pint.Quantity):
        raise ValueError(f"{what} {text!r} cannot be parsed: not a quantity")
    if not dict(q.unit_items()):
        raise ValueError(f"{what} {text!r} has no unit")
    magnitude = float(q.magnitude)
    if not math.isfinite(magnitude):
        raise ValueError(f"{what} {text!r} is not a finite number")
    if magnitude <= 0:
        raise ValueError(f"{what} {text!r} must be positive, got {magnitude:g}")
    return q


def parse_dose(text: str) -> Dose:
    """Parse "75 mg", "1 g", "500 ug"/"µg"/"mcg", "0.1 mg/kg" or "5 mg/m2" into a :class:`Dose`.

    Raises ``ValueError`` naming the input for unparseable strings, a missing unit, a dimension other
    than mass, mass/body-mass or mass/area, and zero or negative amounts.
    """
    q = _quantity(text, "dose", "75 mg")
    dims = q.dimensionality
    mass = _registry().get_dimensionality("[mass]")
    area_dose = _registry().get_dimensionality("[mass] / [length] ** 2")
    if dims == mass:
        return Dose(float(q.to("mg").magnitude), DoseBasis.ABSOLUTE)
    if dims == area_dose:
        return Dose(float(q.to("mg/m**2").magnitude), DoseBasis.PER_M2)
    if q.dimensionless and _per_body_mass(q):
        return Dose(float(q.to("mg/kg").magnitude), DoseBasis.PER_KG)
    raise ValueError(f"dose {text!r} has dimension {dims}; expected a mass (mg), mass per kg or mass per m²")


def _per_body_mass(q: pint.Quantity) -> bool:
    # mg/kg reduces to dimensionless, as do "%" and "ppm": accept it only as mass over mass.
    reg = _registry()
    mass = reg.get_dimensionality("[mass]")
    items = list(q.unit_items())
    return any(exp < 0 and reg.get_dimensionality(u) == mass for u, exp in items) and any(
        exp > 0 and reg.get_dimensionality(u) == mass for u, exp in items
    )


def parse_duration(text: str) -> float:
    """Parse a duration ("24h", "12 h", "1 d", "30 min") into hours (must be positive)."""
    q = _quantity(text, "duration", "12 h")
    if q.dimensionality != _registry().get_dimensionality("[time]"):
        raise ValueError(f"duration {text!r} has dimension {q.dimensionality}; expected a time such as '12 h'")
    return float(q.to("hour").magnitude)
