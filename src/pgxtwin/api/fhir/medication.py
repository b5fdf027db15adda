"""What a FHIR medication resource says: its drugs, dose (mg) and dosing interval (h).

The one reader of MedicationRequest (R4/STU3), DSTU2 MedicationOrder and MedicationStatement for
both the FHIR import (:mod:`.resource_facts`: the twin's medications) and CDS Hooks draft orders
(:mod:`pgxtwin.api.cds.drafts`).

Drugs are recognised by RxNorm ingredient code (the drug library's ``rxnorm_ingredient`` and the
CPIC table's RxNorm column), then by name: RxNorm clinical-drug names (SCD/SBD, e.g.
``"clopidogrel 75 MG Oral Tablet"``, ``"... [Plavix]"``) and free text both carry the ingredient
name, matched against the library's names and synonyms and the CPIC table's drug names.  The
strength in a clinical-drug name turns a dose in tablets or mL into mg.

Lenient with what clients send (CDS Hooks library examples, Synthea): R4 ``doseAndRate`` given as
an object instead of a list, STU3/DSTU2 ``Dosage.doseQuantity`` outside ``doseAndRate``, DSTU2
``periodUnits``, ``timing.code`` (BID, Q8H, ...).  Nothing here raises on malformed input: what
cannot be read is left out (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...knowledge.drugs import drug_names, load_drug, resolve_drug
from ...knowledge.tables import read_table
from ...twin.state import convert
from . import codes
from .codes import PERIOD_UNIT_H, RXNORM, drug_for_rxnorm_code
from .fhirjson import as_dict, as_list, as_str, coded, codings, quantity, texts

__all__ = ["INTERVAL_RANGE_H", "MedicationRegimen", "RXNORM_SYSTEMS", "dose_mg", "interval_h", "medication_concept",
           "names_in", "normalise_dosage", "read_medication", "recognise"]

RXNORM_SYSTEMS = (RXNORM, "urn:oid:2.16.840.1.113883.6.88")
# HL7 v3 GTSAbbreviation codes (FHIR R4 value set timing-abbreviation) with a fixed interval, h
_TIMING_CODE_H = {"QD": 24.0, "QOD": 48.0, "BID": 12.0, "TID": 8.0, "QID": 6.0, "AM": 24.0, "PM": 24.0,
                  "Q1H": 1.0, "Q2H": 2.0, "Q3H": 3.0, "Q4H": 4.0, "Q6H": 6.0, "Q8H": 8.0, "WK": 168.0}
# dose units that count dose units (tablets, capsules) rather than mass or volume
_COUNT_UNITS = {"tablet", "tablets", "tab", "tabs", "{tbl}", "{tablet}", "{tablets}", "capsule", "capsules", "cap",
                "caps", "{capsule}", "{capsules}", "{cap}", "1", "each", "{each}", "unit", "{unit}"}
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|mcg|ug|µg|g)\b(?:\s*/\s*(\d+(?:\.\d+)?)?\s*(ml)\b)?", re.I)
_MAX_NGRAM = 4
INTERVAL_RANGE_H = (0.5, 672.0)  # every 30 min to every 4 weeks


# --- names and codes


@lru_cache(maxsize=1)
def _name_index() -> dict[str, str]:
    """Lower-case name or synonym -> drug (library names first, then CPIC table names)."""
    index: dict[str, str] = {}
    for row in read_table("cpic-table.csv"):
        index.setdefault(row["Drug"].lower(), row["Drug"].lower())
    for name in drug_names():
        index[name] = name
        for synonym in load_drug(name).synonyms:
            index[synonym.lower()] = name
    return index


def _canonical(name: str) -> str:
    """The library name when the drug is in the library, else the CPIC name."""
    try:
        return resolve_drug(name)
    except KeyError:
        return name


def names_in(text: str) -> list[str]:
    """Known drugs named in ``text`` (whole words; longest match first), in order of appearance."""
    words = _WORD.findall(text.lower().replace("[", " ").replace("]", " "))
    index = _name_index()
    found: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_NGRAM, len(words) - i), 0, -1):
            hit = index.get(" ".join(words[i:i + n]))
            if hit is not None:
                if hit not in found:
                    found.append(hit)
                i += n
                break
        else:
            i += 1
    return found


def recognise(concept: Any) -> list[str]:
    """Drugs of a FHIR CodeableConcept: RxNorm ingredient codes, else names in its displays and text."""
    drugs: list[str] = []
    for coding in codings(concept):
        code = as_str(coding.get("code"))
        if coding.get("system") in RXNORM_SYSTEMS and code:
            drug = _drug_of_code(code)
            if drug is not None and _canonical(drug) not in drugs:
                drugs.append(_canonical(drug))
    if drugs:
        return drugs
    for text in texts(concept):
        for drug in names_in(text):
            if _canonical(drug) not in drugs:
                drugs.append(_canonical(drug))
    return drugs


@lru_cache(maxsize=256)
def _factor(unit: str, target: str) -> float | None:
    """How many ``target`` one ``unit`` is (None when not convertible); pint is slow, units repeat."""
    try:
        return convert(1.0, unit.strip().replace("µ", "u"), target, "unit")
    except ValueError:
        return None


_drug_of_code = lru_cache(maxsize=4096)(drug_for_rxnorm_code)


def _strength(names: Iterable[str]) -> tuple[float, bool] | None:
    """(mg per unit, per_ml) from the first single-strength clinical-drug name or text."""
    for text in names:
        matches = _STRENGTH.findall(text)
        if len(matches) != 1:
            continue  # none, or a combination product: no single strength
        value, unit, per, ml = matches[0]
        factor = _factor(unit.lower(), "mg")
        if factor is None:
            continue
        mg = float(value) * factor
        if ml:
            mg /= float(per) if per else 1.0
        return mg, bool(ml)
    return None


# --- dosage


def normalise_dosage(dosage: Any) -> dict[str, Any]:
    """An R4 Dosage from what clients send: ``doseAndRate`` as a list, ``doseQuantity`` inside it,
    ``timing.repeat.periodUnit`` (DSTU2 ``periodUnits``)."""
    if not isinstance(dosage, Mapping):
        return {}
    out = dict(dosage)
    rates = [dict(r) for r in as_list(out.get("doseAndRate")) if isinstance(r, dict)]
    legacy = out.pop("doseQuantity", None)
    if isinstance(legacy, Mapping) and not any("doseQuantity" in r for r in rates):
        rates.insert(0, {"doseQuantity": dict(legacy)})
    if rates:
        out["doseAndRate"] = rates
    else:
        out.pop("doseAndRate", None)
    repeat = as_dict(as_dict(out.get("timing")).get("repeat"))
    if "periodUnits" in repeat and "periodUnit" not in repeat:
        repeat = dict(repeat)
        repeat["periodUnit"] = repeat.pop("periodUnits")
        out["timing"] = dict(out["timing"], repeat=repeat)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if v == v and 0 < v < float("inf") else None


def interval_h(dosage: Mapping[str, Any]) -> float | None:
    """Dosing interval (h) of an R4 Dosage: ``timing.repeat`` frequency/period, else ``timing.code``;
    None outside :data:`INTERVAL_RANGE_H` (not a regimen the drug models are meant for)."""
    found = _interval_h(dosage)
    low, high = INTERVAL_RANGE_H
    return found if found is not None and low <= found <= high else None


def _interval_h(dosage: Mapping[str, Any]) -> float | None:
    timing = as_dict(dosage.get("timing"))
    repeat = as_dict(timing.get("repeat"))
    period, frequency, unit = _number(repeat.get("period")), _number(repeat.get("frequency", 1)), as_str(repeat.get("periodUnit"))
    if period is not None and frequency is not None and unit in PERIOD_UNIT_H:
        return period * PERIOD_UNIT_H[unit] / frequency
    code = coded(timing.get("code"), _TIMING_CODE_H)
    return None if code is None else _TIMING_CODE_H[code]


def dose_mg(dosage: Mapping[str, Any], strength: tuple[float, bool] | None) -> float | None:
    """Dose per administration (mg) of an R4 Dosage; counts and volumes need the product's strength."""
    for rate in as_list(dosage.get("doseAndRate")):
        q = quantity(as_dict(rate).get("doseQuantity"))
        if q is None or q.value <= 0 or q.comparator is not None:
            continue
        value, unit = q.value, codes.UCUM_TO_PINT.get(q.unit, q.unit)
        mass = _factor(unit, "mg")
        if mass is not None:
            return value * mass
        if strength is not None:
            per_unit, per_ml = strength
            volume = _factor(unit, "mL") if per_ml else None
            if volume is not None:
                return value * volume * per_unit
            if not per_ml and unit.strip().lower() in _COUNT_UNITS:
                return value * per_unit
    text = dosage.get("text")
    found = _STRENGTH.findall(text) if isinstance(text, str) else []
    if len(found) == 1 and not found[0][3]:
        factor = _factor(found[0][1].lower(), "mg")
        return None if factor is None else float(found[0][0]) * factor
    return None


# --- one resource


@dataclass(frozen=True)
class MedicationRegimen:
    """What a medication resource states (``None`` where it cannot be read)."""

    drugs: tuple[str, ...]          # recognised drug names (library name, else CPIC name)
    label: str                      # what the resource says, for display
    dose_mg: float | None           # per administration (only for a single-drug product)
    interval_h: float | None
    dosage: Mapping[str, Any]       # the first dosage, normalised (R4)


def medication_concept(resource: Mapping[str, Any]) -> Any:
    """The medication's CodeableConcept: R4 ``medicationCodeableConcept``, else an R5 CodeableReference's concept."""
    return resource.get("medicationCodeableConcept") or as_dict(resource.get("medication")).get("concept")


def read_medication(resource: Mapping[str, Any], concept: Any = None) -> MedicationRegimen:
    """The drugs, dose and interval of a medication resource; ``concept`` when the caller resolved
    it (e.g. from a referenced Medication), else the resource's own."""
    concept = medication_concept(resource) if concept is None else concept
    drugs = tuple(recognise(concept))
    names = [n for n in texts(concept) if not n.isdigit()]  # displays and text, not bare codes
    label = next(iter(names), None) or ", ".join(drugs) or "medication"
    # MedicationRequest/Order: dosageInstruction; MedicationStatement: dosage
    dosage = normalise_dosage(next(iter(as_list(resource.get("dosageInstruction") or resource.get("dosage"))), None))
    dose = dose_mg(dosage, _strength(names)) if len(drugs) == 1 else None
    return MedicationRegimen(drugs, label[:200], dose, interval_h(dosage), dosage)
