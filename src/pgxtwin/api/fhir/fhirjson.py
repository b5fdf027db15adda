"""Tolerant reading of FHIR R4 JSON: the resources of a Bundle or Parameters, codings, references,
date-times and quantities.

Nothing here raises on a malformed element: a wrong type reads as absent, so that one bad element
costs one skipped fact, not the whole Bundle (the official examples are not all valid R4).  Only a
document that is not a FHIR resource at all raises :class:`~pgxtwin.errors.PgxInputError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ...errors import PgxInputError

_MAX_DEPTH = 4  # Bundles and Parameters nested in each other (a $find-subject output in a Bundle)
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


@dataclass(frozen=True)
class Located:
    """A resource with where it was found: ``where`` names it for reports, ``full_url`` is its
    Bundle ``fullUrl`` (references inside a transaction Bundle may use it)."""

    resource: dict[str, Any]
    where: str
    full_url: str | None = None

    @property
    def type(self) -> str:
        return str(self.resource.get("resourceType"))

    @property
    def id(self) -> str | None:
        value = self.resource.get("id")
        return value if isinstance(value, str) and value else None

    @property
    def label(self) -> str:
        """``Type/id`` when the resource has an id, else its position in the document."""
        return f"{self.type}/{self.id}" if self.id else f"{self.type} at {self.where}"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """A FHIR array; a single object where an array belongs counts as a one-element array."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def as_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def resources_in(document: Any) -> list[Located]:
    """Every resource of a Bundle (entries), a Parameters (parameter and part resources, as the
    Genomics Operations return them) or a single resource, nested ones included.

    Raises :class:`PgxInputError` when ``document`` is not a JSON object with a ``resourceType``."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise PgxInputError("not a FHIR resource: a JSON object with a resourceType is expected")
    return list(_walk(document, document["resourceType"], None, 0))


def _walk(resource: dict[str, Any], where: str, full_url: str | None, depth: int) -> Iterator[Located]:
    kind = resource.get("resourceType")
    if kind == "Bundle" and depth < _MAX_DEPTH:
        for i, entry in enumerate(as_list(resource.get("entry"))):
            entry = as_dict(entry)
            inner = entry.get("resource")
            if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str):
                yield from _walk(inner, f"{where}.entry[{i}]", as_str(entry.get("fullUrl")), depth + 1)
        return
    if kind == "Parameters" and depth < _MAX_DEPTH:
        yield from _parameters(as_list(resource.get("parameter")), f"{where}.parameter", depth)
        return
    yield Located(resource, where, full_url)


def _parameters(parameters: list[Any], where: str, depth: int) -> Iterator[Located]:
    for i, parameter in enumerate(parameters):
        parameter = as_dict(parameter)
        inner = parameter.get("resource")
        if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str):
            yield from _walk(inner, f"{where}[{i}].resource", None, depth + 1)
        if depth + 1 < _MAX_DEPTH:
            yield from _parameters(as_list(parameter.get("part")), f"{where}[{i}].part", depth + 1)


# --- codes


def codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in as_list(as_dict(concept).get("coding")) if isinstance(c, dict)]


def _same_system(a: str | None, b: str) -> bool:
    # lenient: http vs https and a trailing slash do not matter; a coding without a system matches
    if a is None:
        return True
    norm = lambda s: s.removeprefix("https://").removeprefix("http://").rstrip("/")  # noqa: E731
    return norm(a) == norm(b)


def coded(concept: Any, codes: set[str] | frozenset[str] | dict[str, Any], system: str | None = None) -> str | None:
    """The first code of ``concept`` that is in ``codes`` (and of ``system`` when given)."""
    for coding in codings(concept):
        code = as_str(coding.get("code"))
        if code in codes and (system is None or _same_system(as_str(coding.get("system")), system)):
            return code
    return None


def has_code(concept: Any, code: str, system: str | None = None) -> bool:
    return coded(concept, {code}, system) is not None


def texts(concept: Any) -> list[str]:
    """The human-readable strings of a CodeableConcept: each coding's display and code, then its text."""
    out: list[str] = []
    for coding in codings(concept):
        for key in ("display", "code"):
            value = as_str(coding.get(key))
            if value and value not in out:
                out.append(value)
    text = as_str(as_dict(concept).get("text"))
    if text and text not in out:
        out.append(text)
    return out


def components(resource: dict[str, Any], code: str, system: str | None = None) -> list[dict[str, Any]]:
    """The Observation components whose code has ``code``."""
    return [c for c in as_list(resource.get("component")) if isinstance(c, dict) and has_code(c.get("code"), code, system)]


# --- references


def reference(value: Any) -> str | None:
    return as_str(as_dict(value).get("reference"))


def reference_target(ref: str) -> tuple[str | None, str]:
    """(resource type, id) of a literal reference: ``Patient/1``, ``http://x/fhir/Patient/1/_history/2``,
    ``urn:uuid:...`` (type unknown)."""
    if ref.startswith("urn:"):
        return None, ref
    parts = [p for p in ref.split("?")[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return None, ref


# --- times and quantities


def parse_datetime(value: Any) -> tuple[datetime | None, bool]:
    """(UTC datetime, whether a time of day was given) of a FHIR date, dateTime or instant.

    A date without a time means its first instant in UTC; a dateTime without a zone is read as
    UTC; a year or year-month alone gives (None, False): too vague for a dated fact."""
    text = as_str(value)
    if text is None:
        return None, False
    partial = _PARTIAL_DATE.match(text)
    if partial:
        if partial.group(3) is None:
            return None, False
        try:
            return datetime(int(partial.group(1)), int(partial.group(2)), int(partial.group(3)), tzinfo=timezone.utc), False
        except ValueError:
            return None, False
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, False
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc), True


def effective(resource: dict[str, Any]) -> tuple[datetime | None, bool]:
    """When an Observation / MedicationAdministration applies: effective[x] (dateTime, instant,
    period start), else ``issued``."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return parse_datetime(resource[key])
    period = as_dict(resource.get("effectivePeriod"))
    if period:
        return parse_datetime(period.get("start"))
    return parse_datetime(resource.get("issued"))


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str
    comparator: str | None


def quantity(value: Any) -> Quantity | None:
    """A FHIR Quantity with a finite number and a unit (the UCUM ``code`` preferred to the ``unit`` text)."""
    q = as_dict(value)
    number = q.get("value")
    if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number or abs(number) == float("inf"):
        return None
    unit = as_str(q.get("code")) or as_str(q.get("unit"))
    if unit is None:
        return None
    comparator = as_str(q.get("comparator"))
    return Quantity(float(number), unit, comparator)
