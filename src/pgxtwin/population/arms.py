"""What each virtual patient receives in each arm of a trial, and the patient strata behind it.

Arms (``trial_spec.Arm``):

- ``standard`` / ``alternative``: the drug's label regimen (``dosing.standard`` of its library
  file, or the arm's ``dose``/``interval_h``); per-kg and per-m² doses use the patient's weight
  and body-surface area (Mosteller);
- ``genotype_guided``: :func:`pgxtwin.twin.regimen.choose_regimen` under the prior (its default
  target: the library's therapeutic window, else a normal metabolizer's exposure).  The choice
  depends only on what enters the drug's model, so it is made once per **stratum**: the
  patient's genotype inputs for the drug's genes (phenotype; activity score where the enzyme has
  a CPIC activity score; diplotype where the library's effect is per diplotype) and the binned
  covariates the drug's model uses (``COVARIATE_BINS``: weight 10 kg, height 10 cm, age 10
  years, CrCL 10 mL/min, each represented by its bin's centre; sex as is).  Choices are cached
  per worker process;
- ``cpic``: the CPIC recommendation (:func:`pgxtwin.knowledge.guidelines.recommendation`) for the
  patient's phenotypes of the drug's CPIC genes, read from its **first sentence** (what to start
  with; later sentences are about titration and non-response, outside a fixed-regimen trial;
  sentences about co-medications are skipped): a cap ("<=40mg") -> the label dose, capped; a
  dose change ("50% reduction", "increase ... by 100%", "25-50% of": the first figure, "1.5 to 2
  times": the first, "400 or 200 mg/day": the first) -> that dose at the label interval, rounded
  to whole units of the smallest strength ("of the lowest recommended starting dose" is read as
  of the label dose); "avoid"/"alternative" -> the arm's ``alternative`` drug at its label
  regimen; standard wording, "monitor" or no recommendation -> the label regimen.

Unknown phenotypes ("Indeterminate") enter the models as unknown genotypes (the normal
metabolizer's typical values, as :meth:`DrugModel.individualise` does) and the CPIC lookup
without that gene.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Literal

import numpy as np
import pyarrow as pa

from ..errors import PgxInputError
from ..knowledge.drugs import enzyme_activity, perpetrators
from ..knowledge.frequencies import allele_frequencies
from ..knowledge.guidelines import classify, recommendation
from ..knowledge.phenotypes import phenotype_of
from ..pk.drug_model import PLAUSIBLE_RANGES, UNKNOWN_PHENOTYPES, DrugModel, GeneInput, PatientFactors, drug_model
from ..pk.units import DoseBasis, parse_dose
from .endpoints import Covariates, per_kg
from .trial_spec import Arm

# covariate -> bin width (kg, cm, years, mL/min) for the genotype-guided strata
COVARIATE_BINS = {"weight_kg": 10.0, "height_cm": 10.0, "age_years": 10.0, "crcl_ml_min": 10.0}

CpicKind = Literal["standard", "adjusted", "alternative"]


# ---------------------------------------------------------------------------------------------
# a block of enrolled patients


@dataclass(frozen=True)
class Cohort:
    """Enrolled patients of one chunk: population indices, covariates and genotypes.

    ``genotypes[gene]`` = (codes (N,), dictionary): code k means diplotype/phenotype
    ``dictionary[k]`` = (diplotype, phenotype or None when unknown)."""

    index: np.ndarray  # (N,) population index of each patient (its randomness key)
    covariates: Covariates
    genotypes: Mapping[str, tuple[np.ndarray, tuple[tuple[str, str | None], ...]]]
    # (codes (N,), dictionary): code k means the co-medications ``dictionary[k]`` (drug names)
    comedications: tuple[np.ndarray, tuple[tuple[str, ...], ...]] | None = None

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def from_table(cls, table: pa.Table, genes: Sequence[str]) -> "Cohort":
        """From a population table (:func:`pgxtwin.population.generator.generate_chunk` columns)."""
        def floats(name: str) -> np.ndarray:
            return table.column(name).to_numpy().astype(float, copy=False)

        sex = table.column("sex").combine_chunks()
        female = np.asarray(sex.dictionary.to_pylist(), dtype=object)[sex.indices.to_numpy()] == "F"
        covariates = Covariates(floats("weight_kg"), floats("height_cm"), floats("age"), female, floats("crcl_ml_min"))
        genotypes = {}
        for gene in genes:
            dip = table.column(f"{gene}_diplotype").combine_chunks()
            phe = table.column(f"{gene}_phenotype").combine_chunks()
            phe_names = phe.dictionary.to_pylist()
            pair = dip.indices.to_numpy().astype(np.int64) * len(phe_names) + phe.indices.to_numpy()
            pairs, codes = dense_codes(pair, len(dip.dictionary) * len(phe_names))
            dip_names = dip.dictionary.to_pylist()
            dictionary = tuple(
                (dip_names[int(p) // len(phe_names)], _known(phe_names[int(p) % len(phe_names)])) for p in pairs
            )
            genotypes[gene] = (codes.astype(np.int64), dictionary)
        comedications = None
        if "comedications" in table.column_names:
            column = table.column("comedications").combine_chunks()
            names = tuple(tuple(t for t in text.split(";") if t) for text in column.dictionary.to_pylist())
            comedications = (column.indices.to_numpy().astype(np.int64), names)
        return cls(table.column("patient_id").to_numpy(), covariates, genotypes, comedications)


def dense_codes(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (ascending) of non-negative integer ``keys`` below ``size``, and each key's
    position among them: ``np.unique(keys, return_inverse=True)`` in O(N + size), no sort."""
    present = np.bincount(keys, minlength=size) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[keys]


def _known(phenotype: str | None) -> str | None:
    return None if phenotype in UNKNOWN_PHENOTYPES or phenotype == "Indeterminate" else phenotype


# ---------------------------------------------------------------------------------------------
# genotype inputs of a drug's model


def gene_input(model: DrugModel, gene: str, diplotype: str, phenotype: str | None) -> GeneInput:
    """What the drug's model uses of one gene: phenotype, plus the activity score where the enzyme
    has a CPIC score, plus the diplotype where the library's effect is per diplotype."""
    per_diplotype = any(e.gene == gene and e.method == "per_diplotype" for e in model.drug.genotype_effects)
    table = enzyme_activity(gene)
    score = None
    if table is not None and table.activity_score_reference is not None and "/" in diplotype:
        score = _activity_score(gene, diplotype)
    return GeneInput(phenotype=phenotype, activity_score=score, diplotype=diplotype if per_diplotype else None)


@lru_cache(maxsize=None)
def _activity_score(gene: str, diplotype: str) -> float | None:
    first, second = diplotype.split("/", 1)
    return phenotype_of(gene, first, second).activity_score


Stratum = tuple[tuple[tuple[str, GeneInput], ...], tuple[str, ...]]  # (gene, input) pairs, co-medications


def _interacting(model: DrugModel, names: tuple[str, ...]) -> tuple[str, ...]:
    """The co-medications among ``names`` that change the activity of one of the drug's genes."""
    acting = {p.drug.lower() for p in perpetrators() if p.gene in model.genes}
    return tuple(sorted(n for n in names if n.lower() in acting))


def genotype_strata(model: DrugModel, cohort: Cohort) -> tuple[np.ndarray, list[Stratum]]:
    """Per patient the index of its stratum for this drug, and each stratum's inputs: (gene, GeneInput)
    for the drug's genes in order, and the co-medications that act on those genes (phenoconversion)."""
    n = cohort.size
    key = np.zeros(n, dtype=np.int64)
    size = 1
    per_gene: list[list[GeneInput]] = []
    for gene in model.genes:
        codes, dictionary = cohort.genotypes[gene]
        inputs: list[GeneInput] = []
        canonical = np.empty(len(dictionary), dtype=np.int64)
        for k, (diplotype, phenotype) in enumerate(dictionary):
            given = gene_input(model, gene, diplotype, phenotype)
            if given not in inputs:
                inputs.append(given)
            canonical[k] = inputs.index(given)
        key = key * len(inputs) + canonical[codes]
        size *= len(inputs)
        per_gene.append(inputs)
    comeds: list[tuple[str, ...]] = [()]
    if cohort.comedications is not None:
        codes, dictionary = cohort.comedications
        canonical = np.empty(len(dictionary), dtype=np.int64)
        for k, names in enumerate(dictionary):
            acting = _interacting(model, names)
            if acting not in comeds:
                comeds.append(acting)
            canonical[k] = comeds.index(acting)
        key = key * len(comeds) + canonical[codes]
        size *= len(comeds)
    combos, inverse = dense_codes(key, size)
    strata = []
    for combo in combos:
        rest = int(combo)
        if cohort.comedications is not None:
            rest, c = divmod(rest, len(comeds))
        else:
            c = 0
        picked = []
        for gene, inputs in reversed(list(zip(model.genes, per_gene))):
            rest, k = divmod(rest, len(inputs))
            picked.append((gene, inputs[k]))
        strata.append((tuple(reversed(picked)), comeds[c]))
    return inverse.astype(np.int64), strata


@lru_cache(maxsize=None)
def typical_parameters(drug: str, genes: tuple[tuple[str, GeneInput], ...], comedications: tuple[str, ...] = ()) -> dict[str, float]:
    """Typical parameters of a genotype (and co-medication) stratum, before covariates (the reference patient's)."""
    return drug_model(drug).individualise(PatientFactors(genes=dict(genes), comedications=comedications)).parameters


def cohort_typical_parameters(model: DrugModel, cohort: Cohort) -> dict[str, np.ndarray]:
    """(N,) genotype-typical parameters of every patient (covariates come later)."""
    inverse, strata = genotype_strata(model, cohort)
    tables = [typical_parameters(model.drug.name, genes, comeds) for genes, comeds in strata]
    return {name: np.array([t[name] for t in tables])[inverse] for name in model.drug.parameters}


# ---------------------------------------------------------------------------------------------
# regimens


@dataclass(frozen=True)
class ArmDosing:
    """Per patient of a cohort: which drug (index into ``drugs``), dose (mg), interval (h) and why
    (index into ``sources``)."""

    drugs: tuple[str, ...]
    drug: np.ndarray
    dose_mg: np.ndarray
    interval_h: np.ndarray
    sources: tuple[str, ...]
    source: np.ndarray


def _label_dose(model: DrugModel, text: str, cov: Covariates, where: str) -> np.ndarray:
    """(N,) mg of a dose string for each patient (per kg / per m² scaled)."""
    try:
        dose = parse_dose(text)
    except ValueError as exc:
        raise PgxInputError(f"{where}: {exc}") from None
    if dose.basis is DoseBasis.PER_KG:
        return dose.amount * cov.weight_kg
    if dose.basis is DoseBasis.PER_M2:
        return dose.amount * cov.bsa_m2
    return np.full(cov.weight_kg.shape[0], dose.amount)


def label_regimen(arm: Arm, model: DrugModel) -> tuple[str, float]:
    """(dose string, interval h) the arm gives: its own, else the library's standard regimen."""
    standard = model.drug.dosing.standard
    return arm.dose or standard.dose, arm.interval_h or standard.interval_h


def round_to_units(model: DrugModel, mg: np.ndarray | float) -> np.ndarray:
    """Whole units of the smallest strength closest to ``mg`` (at least one; halves to even)."""
    unit = min(model.drug.dosing.strengths_mg)
    return np.maximum(1.0, np.round(np.asarray(mg, dtype=float) / unit)) * unit


@dataclass(frozen=True)
class CpicDecision:
    kind: CpicKind
    factor: float | None  # of the label dose
    daily_mg: float | None  # a daily dose, given at the label interval
    cap_mg: float | None  # at most this much per dose
    text: str


_PERCENT_DOWN = re.compile(r"(\d+(?:\.\d+)?)\s*%\s*(?:reduction|decrease)|(?:reduc|decreas)\w*\s+(?:the\s+)?(?:\w+\s+){0,3}?by\s+(\d+(?:\.\d+)?)\s*%", re.I)
_PERCENT_UP = re.compile(r"increas\w*\s+(?:the\s+)?(?:\w+\s+){0,3}?by\s+(\d+(?:\.\d+)?)\s*(?:[-–]\s*\d+(?:\.\d+)?\s*)?%", re.I)
_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*(?:[-–]\s*\d+(?:\.\d+)?\s*)?%\s+of\b", re.I)
_TIMES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:(?:to|-|–|or)\s*\d+(?:\.\d+)?\s*)?(?:times|-fold|fold)", re.I)
_DAILY = re.compile(r"(\d+(?:\.\d+)?)\s*(?:(?:or|to|-|–)\s*\d+(?:\.\d+)?\s*)?mg/day", re.I)
_CAP = re.compile(r"(?:<=|≤|no more than|at most)\s*(\d+(?:\.\d+)?)\s*mg\b", re.I)
_ALTERNATIVE = re.compile(r"\balternative\b", re.I)
_CO_MEDICATION = re.compile(r"\b(?:avoid|use caution with)\b.*\b(?:inhibitors?|inducers?)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z])")


def _instruction(text: str) -> str:
    """The recommendation's first sentence about the drug itself (sentences about co-medications,
    e.g. "Avoid moderate and strong CYP2D6 inhibitors.", are skipped)."""
    sentences = _SENTENCE.split(text.strip())
    return next((s for s in sentences if not _CO_MEDICATION.search(s)), sentences[0])


@lru_cache(maxsize=None)
def cpic_decision(drug: str, phenotypes: tuple[tuple[str, str], ...]) -> CpicDecision:
    """The CPIC arm's reading of the recommendation for these (gene, phenotype) pairs.

    Raises :class:`ValueError` when the instruction asks for another dose but names none we read."""
    rec = recommendation(drug, dict(phenotypes)) if phenotypes else None
    if rec is None or not rec.text:
        return CpicDecision("standard", None, None, None, "no CPIC recommendation")
    first = _instruction(rec.text)
    action = classify(first)
    if m := _CAP.search(first):
        return CpicDecision("adjusted", None, None, float(m.group(1)), rec.text)
    if action == "adjust_dose":
        if m := _PERCENT_DOWN.search(first):
            return CpicDecision("adjusted", 1.0 - float(m.group(1) or m.group(2)) / 100.0, None, None, rec.text)
        if m := _PERCENT_UP.search(first):
            return CpicDecision("adjusted", 1.0 + float(m.group(1)) / 100.0, None, None, rec.text)
        if m := _PERCENT_OF.search(first):
            return CpicDecision("adjusted", float(m.group(1)) / 100.0, None, None, rec.text)
        if m := _TIMES.search(first):
            return CpicDecision("adjusted", float(m.group(1)), None, None, rec.text)
        if m := _DAILY.search(first):
            return CpicDecision("adjusted", None, float(m.group(1)), None, rec.text)
    if action == "avoid" or _ALTERNATIVE.search(first):
        return CpicDecision("alternative", None, None, None, rec.text)
    if action == "adjust_dose":
        raise ValueError(f"cannot read a dose from the CPIC recommendation {first!r}")
    return CpicDecision("standard", None, None, None, rec.text)


def cpic_phenotypes(drug: str, available: Sequence[str]) -> tuple[str, ...]:
    """The drug's CPIC genes that the population genotypes (others cannot inform the lookup)."""
    return tuple(g for g in drug_model(drug).drug.cpic_genes if g in available)


def relevant_covariates(model: DrugModel, dose_text: str) -> tuple[str, ...]:
    """Covariates that change this drug's model or dose (the genotype-guided strata bin them)."""
    kinds = {c.kind for c in model.drug.covariates}
    basis = parse_dose(dose_text).basis
    wanted = []
    if "allometric_weight" in kinds or basis is not DoseBasis.ABSOLUTE or any(per_kg(p.unit) for p in model.drug.parameters.values()):
        wanted.append("weight_kg")
    if basis is DoseBasis.PER_M2:
        wanted.append("height_cm")
    if "age" in kinds:
        wanted.append("age_years")
    if "renal_function" in kinds:
        wanted.append("crcl_ml_min")
    if "female" in kinds:
        wanted.append("female")
    return tuple(wanted)


def _covariate_bins(cov: Covariates, names: Sequence[str]) -> np.ndarray:
    """(N, len(names)) integer bins (sex: 0/1)."""
    columns = [
        cov.female.astype(np.int64) if name == "female" else np.floor(getattr(cov, name) / COVARIATE_BINS[name]).astype(np.int64)
        for name in names
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((cov.weight_kg.shape[0], 0), dtype=np.int64)


@lru_cache(maxsize=None)
def guided_regimen(drug: str, stratum: Stratum, bins: tuple[tuple[str, int], ...]) -> tuple[float, float]:
    """(dose mg, interval h) the twin's optimiser chooses for a stratum (prior, default target)."""
    from ..twin.regimen import choose_regimen

    values: dict[str, object] = {}
    for name, b in bins:
        if name == "female":
            values["sex"] = "F" if b else "M"
        else:
            # the bin's centre, within the range PatientFactors accepts (Cockcroft-Gault gives a few
            # very heavy, young virtual adults a CrCL above its 300 mL/min bound: dosed as 300)
            values[name] = min((b + 0.5) * COVARIATE_BINS[name], PLAUSIBLE_RANGES[name][1])
    genes, comedications = stratum
    choice = choose_regimen(drug, PatientFactors(genes=dict(genes), comedications=comedications, **values))  # type: ignore[arg-type]
    return choice.best.dose_mg, choice.best.interval_h


def arm_dosing(arm: Arm, cohort: Cohort, population_genes: Sequence[str]) -> ArmDosing:
    """Drug, dose and interval of every patient of the cohort in this arm."""
    model = drug_model(arm.drug)
    n = cohort.size
    zeros = np.zeros(n, dtype=np.int8)
    dose_text, interval = label_regimen(arm, model)
    if arm.kind in ("standard", "alternative"):
        dose = _label_dose(model, dose_text, cohort.covariates, f"arm {arm.name}: dose")
        source = "label regimen" if arm.dose is None and arm.interval_h is None else "arm regimen"
        return ArmDosing((model.drug.name,), zeros, dose, np.full(n, float(interval)), (source,), zeros)
    if arm.kind == "genotype_guided":
        return _guided(model, cohort, dose_text)
    return _cpic(arm, model, cohort, population_genes, dose_text, float(interval))


def _guided(model: DrugModel, cohort: Cohort, dose_text: str) -> ArmDosing:
    n = cohort.size
    genotype, strata = genotype_strata(model, cohort)
    names = relevant_covariates(model, dose_text)
    bins = _covariate_bins(cohort.covariates, names)
    keys = np.concatenate([genotype[:, None], bins], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    choices = np.array([
        guided_regimen(model.drug.name, strata[int(row[0])], tuple(zip(names, (int(b) for b in row[1:]))))
        for row in unique
    ]).reshape(-1, 2)
    inverse = inverse.reshape(-1)
    zeros = np.zeros(n, dtype=np.int8)
    return ArmDosing((model.drug.name,), zeros, choices[inverse, 0], choices[inverse, 1], ("twin optimiser",), zeros)


CPIC_SOURCES = ("CPIC: standard dosing", "CPIC: dose adjusted", "CPIC: alternative drug")


def _cpic(arm: Arm, model: DrugModel, cohort: Cohort, population_genes: Sequence[str], dose_text: str, interval: float) -> ArmDosing:
    n = cohort.size
    genes = cpic_phenotypes(model.drug.name, population_genes)
    key = np.zeros(n, dtype=np.int64)
    size = 1
    names: list[list[str | None]] = []
    for gene in genes:
        codes, dictionary = cohort.genotypes[gene]
        phenotypes = sorted({p for _, p in dictionary}, key=lambda p: (p is None, p or ""))
        position = np.array([phenotypes.index(p) for _, p in dictionary], dtype=np.int64)
        key = key * len(phenotypes) + position[codes]
        size *= len(phenotypes)
        names.append(phenotypes)
    combos, inverse = dense_codes(key, size)
    label = _label_dose(model, dose_text, cohort.covariates, f"arm {arm.name}: dose")
    drug = np.zeros(n, dtype=np.int8)
    dose = label.copy()
    tau = np.full(n, interval)
    source = np.zeros(n, dtype=np.int8)
    alternative = drug_model(arm.alternative) if arm.alternative else None
    for c, combo in enumerate(combos):
        rows = inverse == c
        decision = cpic_decision(model.drug.name, _phenotype_pairs(genes, names, int(combo)))
        if decision.kind == "alternative":
            if alternative is None:  # plan_trial checks reachable phenotypes before any work
                raise PgxInputError(f"arm {arm.name}: alternative required: {decision.text}")
            alt_text, alt_tau = alternative.drug.dosing.standard.dose, alternative.drug.dosing.standard.interval_h
            drug[rows], tau[rows], source[rows] = 1, alt_tau, 2
            dose[rows] = _label_dose(alternative, alt_text, cohort.covariates.take(np.flatnonzero(rows)), "alternative")
        elif decision.kind == "adjusted":
            if decision.factor is not None:
                dose[rows] = round_to_units(model, label[rows] * decision.factor)
            elif decision.daily_mg is not None:
                dose[rows] = round_to_units(model, decision.daily_mg * interval / 24.0)
            else:
                dose[rows] = np.minimum(label[rows], decision.cap_mg)  # type: ignore[arg-type]
            source[rows] = np.where(dose[rows] != label[rows], 1, 0)
    drugs = (model.drug.name,) + ((alternative.drug.name,) if alternative else ())
    return ArmDosing(drugs, drug, dose, tau, CPIC_SOURCES, source)


def _phenotype_pairs(genes: Sequence[str], names: Sequence[Sequence[str | None]], combo: int) -> tuple[tuple[str, str], ...]:
    picked = []
    for gene, options in reversed(list(zip(genes, names))):
        combo, k = divmod(combo, len(options))
        if options[k] is not None:
            picked.append((gene, options[k]))
    return tuple(reversed(picked))


# ---------------------------------------------------------------------------------------------
# what a population can hold (for the checks made before any work)


@lru_cache(maxsize=None)
def reachable_genotypes(gene: str, groups: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    """(diplotype, phenotype or None) pairs a population of these groups can hold: both alleles
    with a non-zero frequency in the same group (the generator draws within a group)."""
    out: dict[tuple[str, str | None], None] = {}
    for group in groups:
        freqs = allele_frequencies(gene, group)
        alleles = [a for a, f in zip(freqs.alleles, freqs.frequencies) if f > 0]
        for i, first in enumerate(alleles):
            for second in alleles[i:]:
                call = phenotype_of(gene, first, second)
                out[(f"{first}/{second}", _known(call.phenotype))] = None
    return tuple(out)


def reachable_phenotype_sets(genes: Sequence[str], groups: tuple[str, ...], allowed: Mapping[str, Sequence[str]]) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the genes' phenotypes a population can hold (within ``allowed``)."""
    options = []
    for gene in genes:
        found = {p for _, p in reachable_genotypes(gene, groups)}
        if gene in allowed:
            found &= set(allowed[gene])
        options.append(sorted(found, key=lambda p: (p is None, p or "")))
    return [tuple((g, p) for g, p in zip(genes, combo) if p is not None) for combo in product(*options)]
