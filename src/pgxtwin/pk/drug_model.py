"""From a drug-library entry and a patient's factors to model parameters.

Genotype effects (fm-scaling or literature factors), co-medication effects (phenoconversion),
covariates and between-subject variability are applied here, in that order, to the typical
values of a normal-metabolizer reference patient.  Units: mg, L, h, mg/L.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from ..errors import PgxInputError
from ..genomics.result import GeneResult
from ..knowledge.drugs import Drug, enzyme_activity, load_drug, perpetrators, resolve_drug
from ..knowledge.drugs.schema import GenotypeEffect
from ..knowledge.phenotypes import phenotype_from_score, phenotype_names, phenotype_of
from .models import MichaelisMenten, Model, OneCompartment, ParentMetabolite, TwoCompartment

# internal unit of each unit string a drug file may use, and the factor to it
_UNITS: dict[str, tuple[str, float]] = {
    "L/h": ("L/h", 1.0), "L": ("L", 1.0), "1/h": ("1/h", 1.0), "h": ("h", 1.0), "mg/h": ("mg/h", 1.0),
    "mg/L": ("mg/L", 1.0), "-": ("-", 1.0), "L/h/kg": ("L/h", 1.0), "L/kg": ("L", 1.0),
}
_PER_KG = {"L/h/kg", "L/kg"}
REFERENCE_WEIGHT_KG = 70.0
NORMAL_PHENOTYPES = ("Normal Metabolizer", "Normal Function")
UNKNOWN_PHENOTYPES = (None, "Indeterminate", "n/a")


@dataclass(frozen=True)
class GeneInput:
    """What is known of one gene for a patient (any of the three may be missing)."""

    phenotype: str | None = None
    activity_score: float | None = None
    diplotype: str | None = None

    @classmethod
    def from_gene_result(cls, result: GeneResult) -> "GeneInput | None":
        """What a call result tells the PK layer (None when it tells nothing).

        The diplotype is the call's when the gene is called (its first, top-ranked diplotype);
        ambiguous or partial calls give only their shared phenotype.  A no-call may still carry a
        phenotype (SLCO1B1 from rs4149056).
        """
        diplotype = result.diplotypes[0] if result.status in ("called", "outside_call") and result.diplotypes else None
        if result.phenotype in UNKNOWN_PHENOTYPES and result.activity_score is None and diplotype is None:
            return None
        return cls(phenotype=result.phenotype, activity_score=result.activity_score, diplotype=diplotype)

    @classmethod
    def from_text(cls, gene: str, text: str) -> "GeneInput":
        """A phenotype name ("Poor Metabolizer") or a diplotype ("*1/*3") for ``gene``."""
        text = text.strip()
        if "/" in text:
            first, second = (part.strip() for part in text.split("/", 1))
            try:
                call = phenotype_of(gene, first, second)
            except KeyError:
                raise PgxInputError(f"{gene}: unknown diplotype {text!r}") from None
            return cls(phenotype=call.phenotype, activity_score=call.activity_score, diplotype=f"{first}/{second}")
        known = phenotype_names(gene)
        for name in known:
            if name.lower() == text.lower():
                return cls(phenotype=name)
        raise PgxInputError(f"{gene}: unknown phenotype {text!r} (known: {', '.join(known)})")


def gene_inputs(results: Mapping[str, GeneResult]) -> dict[str, GeneInput]:
    """Per gene, what a genotype result tells the PK layer (genes that tell nothing left out)."""
    inputs = {gene: GeneInput.from_gene_result(result) for gene, result in results.items()}
    return {gene: given for gene, given in inputs.items() if given is not None}


# Covariate values PatientFactors accepts (inclusive): wider than any adult or child, to catch unit mistakes
PLAUSIBLE_RANGES = {"weight_kg": (0.5, 400.0), "height_cm": (30.0, 260.0), "age_years": (0.0, 120.0), "crcl_ml_min": (0.0, 300.0)}


@dataclass(frozen=True)
class PatientFactors:
    """Covariates, genotype knowledge and co-medications of one (virtual) patient."""

    weight_kg: float | None = None
    height_cm: float | None = None
    age_years: float | None = None
    sex: str | None = None  # "F" or "M"
    crcl_ml_min: float | None = None
    genes: dict[str, GeneInput] = field(default_factory=dict)
    comedications: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, (low, high) in PLAUSIBLE_RANGES.items():
            value = getattr(self, name)
            if value is not None and not (low <= value <= high):
                raise PgxInputError(f"{name}={value} is outside the plausible range [{low}, {high}]")
        if self.sex is not None and self.sex not in ("F", "M"):
            raise PgxInputError(f"sex must be F or M, not {self.sex!r}")

    @property
    def bsa_m2(self) -> float | None:
        """Body-surface area by Mosteller (m²), when weight and height are known."""
        if self.weight_kg is None or self.height_cm is None:
            return None
        return math.sqrt(self.weight_kg * self.height_cm / 3600.0)


@dataclass(frozen=True)
class GeneStatus:
    """How one gene acts for this drug and patient: genotype and phenoconverted phenotype."""

    gene: str
    phenotype: str | None
    activity_score: float | None
    diplotype: str | None
    activity: float | None  # relative to a normal metabolizer, from the genotype
    effective_activity: float | None  # after co-medications
    effective_phenotype: str | None
    perpetrators: tuple[str, ...]
    multiplier: float = 1.0  # product of the co-medications' activity multipliers

    def as_dict(self) -> dict[str, object]:
        return {
            "genotype_phenotype": self.phenotype,
            "activity_score": self.activity_score,
            "diplotype": self.diplotype,
            "phenotype": self.effective_phenotype,
            "relative_activity": self.effective_activity,
            "co_medications": list(self.perpetrators),
        }


def relative_activity(gene: str, given: GeneInput) -> float | None:
    """Relative enzyme activity ``a`` (normal = 1) from the activity score or the phenotype."""
    table = enzyme_activity(gene)
    if table is not None and table.activity_score_reference is not None and given.activity_score is not None:
        return given.activity_score / table.activity_score_reference.value
    if table is not None and given.phenotype in table.phenotypes:
        return table.phenotypes[given.phenotype].value
    if given.phenotype in NORMAL_PHENOTYPES:
        return 1.0
    return None


def _co_medication_multiplier(gene: str, comedications: tuple[str, ...]) -> tuple[float, tuple[str, ...]]:
    multiplier, names = 1.0, []
    wanted = {c.lower() for c in comedications}
    for perp in perpetrators():
        if perp.gene == gene and perp.drug.lower() in wanted:
            multiplier *= perp.activity_multiplier.value
            names.append(f"{perp.drug} ({perp.effect.replace('_', ' ')})")
    return multiplier, tuple(names)


def gene_status(gene: str, patient: PatientFactors) -> GeneStatus:
    """Genotype and phenoconverted phenotype of ``gene`` under the patient's co-medications."""
    given = patient.genes.get(gene, GeneInput())
    activity = relative_activity(gene, given)
    multiplier, names = _co_medication_multiplier(gene, patient.comedications)
    effective = None if activity is None else activity * multiplier
    phenotype = given.phenotype
    if names and given.phenotype is not None:
        table = enzyme_activity(gene)
        if given.activity_score is not None and table is not None and table.activity_score_reference is not None:
            phenotype = phenotype_from_score(gene, given.activity_score * multiplier)
        elif effective is not None and table is not None:
            # the phenotype whose activity is closest to the effective activity
            phenotype = min(table.phenotypes, key=lambda p: abs(table.phenotypes[p].value - effective))
        else:
            phenotype = f"{given.phenotype} (with {', '.join(names)})"
    return GeneStatus(
        gene, given.phenotype, given.activity_score, given.diplotype, activity, effective, phenotype, names, multiplier
    )


def pathway_fraction(effect: GenotypeEffect) -> float | None:
    """fm of the affected pathway: given, or 1 - the poor-metabolizer factor (a PM's pathway
    activity is nil by the CPIC definition of no-function alleles)."""
    if effect.fm is not None:
        return effect.fm.value
    poor = effect.factors.get("Poor Metabolizer") or effect.factors.get("Poor Function")
    if poor is not None and effect.method == "per_phenotype" and poor.value < 1.0:
        return 1.0 - poor.value
    return None


def _structure(drug: Drug) -> Model:
    name = drug.model.structure
    if name == "one_compartment":
        return OneCompartment()
    if name == "two_compartment":
        return TwoCompartment()
    if name == "michaelis_menten":
        return MichaelisMenten()
    if name == "parent_metabolite":
        return ParentMetabolite()
    raise PgxInputError(f"{drug.name}: model structure {name!r} is not simulated by this version")


@dataclass(frozen=True)
class Individualised:
    """Typical parameters of one patient for one drug, and how they came about."""

    parameters: dict[str, float]
    genes: dict[str, GeneStatus]
    notes: tuple[str, ...]


class DrugModel:
    """A library drug bound to its PK structure; turns patient factors into parameters."""

    def __init__(self, name: str) -> None:
        self.drug = load_drug(name)
        self.structure = _structure(self.drug)
        # drug analyte -> model output; the first analyte listed is the drug's main one
        analytes = self.drug.model.analytes
        if all(a.role is not None for a in analytes):
            self.analytes = {a.name: a.role for a in analytes}
        else:
            self.analytes = dict(zip((a.name for a in analytes), self.structure.analytes))

    @cached_property
    def genes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.gene for e in self.drug.genotype_effects))

    def reference_parameters(self, weight_kg: float | None) -> dict[str, float]:
        out = {}
        for name, param in self.drug.parameters.items():
            if param.unit not in _UNITS:
                raise ValueError(f"{self.drug.name}: parameter {name} has unknown unit {param.unit!r}")
            value = param.value * _UNITS[param.unit][1]
            if param.unit in _PER_KG:
                value *= weight_kg if weight_kg is not None else REFERENCE_WEIGHT_KG
            out[name] = value
        return out

    def individualise(self, patient: PatientFactors) -> Individualised:
        """Typical parameters for this patient: genotype, co-medications, covariates."""
        notes: list[str] = []
        params = self.reference_parameters(patient.weight_kg)
        statuses = {gene: gene_status(gene, patient) for gene in self.genes}
        for effect in self.drug.genotype_effects:
            status = statuses[effect.gene]
            if status.phenotype is None and status.activity_score is None:
                notes.append(
                    f"{effect.gene} unknown: {effect.parameter} is the normal-metabolizer typical value"
                )
                continue
            genotype_factor = self._genotype_factor(effect, status)
            factor, formed = genotype_factor, None
            if status.perpetrators:
                factor, formed = self._with_co_medications(effect, status, genotype_factor, notes)
            elif effect.forms_metabolite and pathway_fraction(effect) is not None:
                formed = self._formation_factor(effect, genotype_factor)
            params[effect.parameter] *= factor
            if formed is not None and "fm" in params and effect.parameter != "fm":
                params["fm"] = min(1.0, params["fm"] * formed)
        self._apply_covariates(params, patient, notes)
        return Individualised(params, statuses, tuple(notes))

    def _genotype_factor(self, effect: GenotypeEffect, status: GeneStatus) -> float:
        keys = [status.diplotype] if effect.method == "per_diplotype" else []
        keys.append(status.phenotype)
        for key in keys:
            if key is not None and key in effect.factors:
                return effect.factors[key].value
        if status.phenotype in NORMAL_PHENOTYPES and effect.method != "fm_activity":
            return 1.0
        fm = pathway_fraction(effect)
        if fm is not None:
            if status.activity is None:
                raise PgxInputError(
                    f"{self.drug.name}: no relative {effect.gene} activity for {status.phenotype!r} in the library"
                )
            return fm * status.activity + (1.0 - fm)
        group = status.diplotype or status.phenotype
        raise PgxInputError(
            f"{self.drug.name}: the library has no sourced {effect.gene} effect for {group!r}"
            f" (sourced groups: {', '.join(effect.factors)})"
        )

    @staticmethod
    def _formation_factor(effect: GenotypeEffect, factor: float) -> float:
        # the pathway's share scaled by its activity, relative to all of the parent's clearance
        fm = pathway_fraction(effect) or 0.0
        activity = max(0.0, (factor - (1.0 - fm)) / fm)
        return activity / factor if factor > 0 else 0.0

    def _with_co_medications(
        self, effect: GenotypeEffect, status: GeneStatus, genotype_factor: float, notes: list[str]
    ) -> tuple[float, float | None]:
        multiplier = status.multiplier
        fm = pathway_fraction(effect)
        if fm is None:
            notes.append(
                f"{effect.gene} co-medication ({', '.join(status.perpetrators)}) not applied to"
                f" {effect.parameter}: the library gives no fm for this pathway"
            )
            return genotype_factor, None
        # the pathway's share after the genotype effect, then scaled by the co-medication
        activity = max(0.0, (genotype_factor - (1.0 - fm)) / fm)
        pathway = fm * activity
        factor = pathway * multiplier + (1.0 - fm)
        formed = (pathway * multiplier / fm) / factor if effect.forms_metabolite and factor > 0 else None
        return factor, formed

    def _apply_covariates(self, params: dict[str, float], patient: PatientFactors, notes: list[str]) -> None:
        for cov in self.drug.covariates:
            if cov.kind == "allometric_weight" and cov.exponent is not None:
                if patient.weight_kg is None:
                    notes.append(f"weight unknown: {cov.parameter} at the {cov.reference} kg reference")
                    continue
                params[cov.parameter] *= (patient.weight_kg / (cov.reference or REFERENCE_WEIGHT_KG)) ** cov.exponent.value
            elif cov.kind == "renal_function" and cov.fraction is not None:
                if patient.crcl_ml_min is None:
                    notes.append(f"renal function unknown: {cov.parameter} at CrCL {cov.reference} mL/min")
                    continue
                frac = cov.fraction.value
                params[cov.parameter] *= (1.0 - frac) + frac * patient.crcl_ml_min / (cov.reference or 100.0)
            elif cov.kind == "age" and cov.slope is not None:
                if patient.age_years is None:
                    notes.append(f"age unknown: {cov.parameter} at age {cov.reference}")
                    continue
                params[cov.parameter] *= max(0.05, 1.0 + cov.slope.value * (patient.age_years - (cov.reference or 0.0)))
            elif cov.kind == "female" and cov.factor is not None and patient.sex == "F":
                params[cov.parameter] *= cov.factor.value

    def omega(self, typical: dict[str, float]) -> tuple[tuple[str, ...], np.ndarray]:
        """Parameters with between-subject variability and the covariance Ω of their log-deviations
        (ω² = ln(1 + CV²), with the file's correlations)."""
        cv = self.drug.variability.cv
        names = tuple(name for name in cv if name in typical)
        sd = np.sqrt(np.log1p(np.array([cv[name].value for name in names]) ** 2))
        corr = np.eye(len(names))
        for a, b, r in self.drug.variability.correlations:
            if a in names and b in names:
                i, j = names.index(a), names.index(b)
                corr[i, j] = corr[j, i] = r.value
        return names, corr * np.outer(sd, sd)

    def sample(self, typical: dict[str, float], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` parameter sets around ``typical``: log-normal between-subject variability."""
        names, cov = self.omega(typical)
        out = {name: np.full(n, value) for name, value in typical.items()}
        if not names:
            return out
        eta = rng.multivariate_normal(np.zeros(len(names)), cov, size=n, method="cholesky")
        for k, name in enumerate(names):
            values = typical[name] * np.exp(eta[:, k])
            if name in ("f", "fm"):
                values = np.minimum(values, 1.0)  # fractions stay fractions
            out[name] = values
        return out


@lru_cache(maxsize=None)
def drug_model(name: str) -> DrugModel:
    """:class:`DrugModel` for a library name or synonym (errors suggest the nearest names)."""
    resolved = resolve_drug(name)
    return drug_model(resolved) if resolved != name else DrugModel(name)
