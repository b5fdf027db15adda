"""Draft medication orders of a CDS Hooks request -> the drugs, doses (mg) and intervals (h) they ask for.

Drugs are recognised by RxNorm ingredient code (the drug library's ``rxnorm_ingredient`` and the
CPIC table's RxNorm column), then by name: RxNorm clinical-drug names (SCD/SBD, e.g.
``"clopidogrel 75 MG Oral Tablet"``, ``"... [Plavix]"``) and free text both carry the ingredient
name, matched against the library's names and synonyms and the CPIC table's drug names.  The
strength in a clinical-drug name turns a dose in tablets or mL into mg.

Lenient with what CDS clients send (CDS Hooks library examples): R4 ``doseAndRate`` given as an
object instead of a list, STU3/DSTU2 ``Dosage.doseQuantity`` outside ``doseAndRate``, DSTU2
``MedicationOrder`` and ``periodUnits``; orders of other kinds (NutritionOrder, ...) are ignored.
Nothing here raises on malformed input: what cannot be read is left out.
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
from ..fhir.codes import PERIOD_UNIT_H, RXNORM, drug_for_rxnorm_code

__all__ = ["DraftMedication", "RXNORM_SYSTEMS", "draft_medications", "normalise_dosage", "recognise"]

RXNORM_SYSTEMS = (RXNORM, "urn:oid:2.16.840.1.113883.6.88")
MEDICATION_ORDERS = ("MedicationRequest", "MedicationOrder")  # R4/STU3, DSTU2
# HL7 v3 GTSAbbreviation codes (FHIR R4 value set timing-abbreviation) with a fixed interval, h
_TIMING_CODE_H = {"QD": 24.0, "QOD": 48.0, "BID": 12.0, "TID": 8.0, "QID": 6.0, "AM": 24.0, "PM": 24.0,
                  "Q1H": 1.0, "Q2H": 2.0, "Q3H": 3.0, "Q4H": 4.0, "Q6H": 6.0, "Q8H": 8.0, "WK": 168.0}
# dose units that count dose units (tablets, capsules) rather than mass or volume
_COUNT_UNITS = {"tablet", "tablets", "tab", "tabs", "{tbl}", "{tablet}", "{tablets}", "capsule", "capsules", "cap",
                "caps", "{capsule}", "{capsules}", "{cap}", "1", "each", "{each}", "unit", "{unit}"}
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|mcg|ug|µg|g)\b(?:\s*/\s*(\d+(?:\.\d+)?)?\s*(ml)\b)?", re.I)
_MAX_NGRAM = 4


@dataclass(frozen=True)
class DraftMedication:
    """One draft medication order and what it asks for (``None`` where it cannot be read)."""

    resource_type: str
    resource_id: str | None
    drugs: tuple[str, ...]          # recognised drug names (library name, else CPIC name)
    label: str                      # what the order says, for display
    dose_mg: float | None
    interval_h: float | None
    resource: Mapping[str, Any]     # the order as the client sent it

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else None


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
    """Drugs of a FHIR CodeableConcept: RxNorm ingredient codes, else names in codings and text."""
    if not isinstance(concept, Mapping):
        return []
    codings = [c for c in concept.get("coding") or [] if isinstance(c, Mapping)] if isinstance(concept.get("coding"), list) else []
    drugs: list[str] = []
    for coding in codings:
        code = coding.get("code")
        if coding.get("system") in RXNORM_SYSTEMS and isinstance(code, str):
            drug = _drug_of_code(code)
            if drug is not None and _canonical(drug) not in drugs:
                drugs.append(_canonical(drug))
    if drugs:
        return drugs
    texts = [c.get("display") for c in codings] + [concept.get("text")]
    for text in texts:
        if isinstance(text, str):
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


def _strength(texts: Iterable[Any]) -> tuple[float, bool] | None:
    """(mg per unit, per_ml) from the first single-strength clinical-drug name or text."""
    for text in texts:
        if not isinstance(text, str):
            continue
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
    rates = out.get("doseAndRate")
    if isinstance(rates, Mapping):
        rates = [dict(rates)]
    rates = [dict(r) for r in rates if isinstance(r, Mapping)] if isinstance(rates, list) else []
    legacy = out.pop("doseQuantity", None)
    if isinstance(legacy, Mapping) and not any("doseQuantity" in r for r in rates):
        rates.insert(0, {"doseQuantity": dict(legacy)})
    if rates:
        out["doseAndRate"] = rates
    else:
        out.pop("doseAndRate", None)
    timing = out.get("timing")
    if isinstance(timing, Mapping) and isinstance(timing.get("repeat"), Mapping):
        repeat = dict(timing["repeat"])
        if "periodUnits" in repeat and "periodUnit" not in repeat:
            repeat["periodUnit"] = repeat.pop("periodUnits")
        out["timing"] = dict(timing, repeat=repeat)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if v == v and 0 < v < float("inf") else None


def interval_h(dosage: Mapping[str, Any]) -> float | None:
    """Dosing interval (h) of an R4 Dosage: ``timing.repeat`` frequency/period, else ``timing.code``."""
    timing = dosage.get("timing")
    if not isinstance(timing, Mapping):
        return None
    repeat = timing.get("repeat")
    if isinstance(repeat, Mapping):
        period, unit = _number(repeat.get("period")), repeat.get("periodUnit")
        frequency = _number(repeat.get("frequency", 1))
        if period is not None and frequency is not None and unit in PERIOD_UNIT_H:
            return period * PERIOD_UNIT_H[unit] / frequency
    code = timing.get("code")
    if isinstance(code, Mapping):
        for coding in code.get("coding") or []:
            if isinstance(coding, Mapping) and coding.get("code") in _TIMING_CODE_H:
                return _TIMING_CODE_H[coding["code"]]
    return None


def dose_mg(dosage: Mapping[str, Any], strength: tuple[float, bool] | None) -> float | None:
    """Dose per administration (mg) of an R4 Dosage; counts and volumes need the product's strength."""
    for rate in dosage.get("doseAndRate") or []:
        quantity = rate.get("doseQuantity") if isinstance(rate, Mapping) else None
        if not isinstance(quantity, Mapping):
            continue
        value = _number(quantity.get("value"))
        unit = quantity.get("code") or quantity.get("unit")
        if value is None or not isinstance(unit, str) or not unit.strip():
            continue
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


# --- orders


def _medication_concept(resource: Mapping[str, Any]) -> Any:
    concept = resource.get("medicationCodeableConcept")
    if concept is None:
        # R5 CodeableReference, or a contained Medication's code
        medication = resource.get("medication")
        if isinstance(medication, Mapping):
            concept = medication.get("concept")
    return concept


def read_order(resource: Mapping[str, Any]) -> DraftMedication | None:
    """One medication order (None for other resources or an unrecognisable one)."""
    kind = resource.get("resourceType")
    if kind not in MEDICATION_ORDERS:
        return None
    concept = _medication_concept(resource)
    drugs = tuple(recognise(concept))
    concept = concept if isinstance(concept, Mapping) else {}
    codings = [c for c in concept.get("coding") or [] if isinstance(c, Mapping)] if isinstance(concept.get("coding"), list) else []
    names = [c.get("display") for c in codings] + [concept.get("text")]
    label = next((n for n in names if isinstance(n, str) and n.strip()), None) or ", ".join(drugs) or "medication"
    dosages = resource.get("dosageInstruction")
    dosage = normalise_dosage(dosages[0]) if isinstance(dosages, list) and dosages else {}
    single = len(drugs) == 1
    dose = dose_mg(dosage, _strength(names)) if single else None
    rid = resource.get("id")
    return DraftMedication(str(kind), rid if isinstance(rid, str) and rid else None, drugs, label[:200], dose,
                           interval_h(dosage), resource)


def draft_medications(bundle: Mapping[str, Any], selections: Iterable[str] | None = None) -> list[DraftMedication]:
    """The medication orders of a draftOrders Bundle (only the ``selections`` when given)."""
    wanted = None if selections is None else set(selections)
    out = []
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        order = read_order(resource)
        if order is None:
            continue
        if wanted is not None and order.reference not in wanted:
            continue
        out.append(order)
    return out
