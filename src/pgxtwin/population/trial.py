"""Run an in-silico trial: check the trial file against the drug library and the population data
(before any work), simulate it chunk by chunk, and leave a results folder.

Results folder::

    manifest.json        what was run (trial, plan, versions, counts, execution), written last
    trial.yaml           the trial file as given
    patients/part-*.parquet   one row per enrolled patient and arm, one file per chunk
    summary.csv, summary.json, report.html, plots/*.png   (see trial_report)

Design: population replicate r is generated with seed ``population_seed(seed, r)`` (replicate 0
uses the trial's seed, so it is the population ``pgxtwin population`` makes from that seed);
patients outside the inclusion criteria are dropped (``population.size`` counts those screened);
every enrolled patient goes through every arm.  A patient's between-subject variability for a
drug is drawn from a Philox stream keyed by (seed, replicate, drug) at the patient's index, so
results do not depend on chunk size or worker count.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import __version__
from ..atomic import atomic_write
from ..errors import PgxInputError
from ..knowledge.drugs import library_digest, perpetrators, resolve_drug
from ..knowledge.frequencies import frequency_genes, groups, groups_with_data, missing_reason
from ..knowledge.phenotypes import phenotype_names
from ..knowledge.version import knowledge_base_version
from ..pk.drug_model import PatientFactors, drug_model
from ..pk.units import parse_dose
from . import arms as arms_mod
from .endpoints import (
    ENDPOINT_COLUMNS, ENGINE_BATCH, EXPOSURE_COLUMNS, doses_in, uses_fast_path, drug_endpoints, endpoint_problem, endpoint_values, exposure,
    individual_parameters, standard_normals, variability_key, variability_size,
)
from .generator import PopulationSpec, generate_chunk
from .trial_spec import DEFAULT_CHUNK_SIZE, TrialSpec, load_trial

IMPLAUSIBLE_FACTOR = 10.0  # an arm dose above 10x the labelled maximum single dose is an error (as pk.scenarios)
RESULT_FORMAT = 1


@dataclass(frozen=True)
class TrialPlan:
    """A trial checked against the library and the population data: everything a chunk needs."""

    spec: TrialSpec
    source: str
    genes: tuple[str, ...]  # genotyped in the population
    stratify_by: tuple[str, ...]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self.spec.endpoints)

    @property
    def duration_h(self) -> float:
        return self.spec.duration_days * 24.0

    @property
    def drugs(self) -> tuple[str, ...]:
        """Every drug a patient may receive (arms' drugs and CPIC alternatives)."""
        return tuple(dict.fromkeys(d for a in self.spec.arms for d in (a.drug, a.alternative) if d))


def population_seed(seed: int, replicate: int) -> int:
    """Seed of replicate ``replicate``'s population (replicate 0: the trial's own seed)."""
    if replicate == 0:
        return seed
    return int(np.random.SeedSequence([seed, replicate]).generate_state(1, np.uint64)[0])


def population_spec(plan: TrialPlan, replicate: int) -> PopulationSpec:
    """The population of one replicate (the inclusion age range is the generator's age range)."""
    mix = {g: f for g, f in plan.spec.population.mix.items() if f > 0}
    age = plan.spec.population.inclusion.age
    extra = {} if age is None else {"age_range": age}
    prevalence = plan.spec.population.comedication_prevalence or None
    return PopulationSpec(mix=mix, genes=plan.genes, seed=population_seed(plan.spec.seed, replicate),
                          comedication_prevalence=prevalence, **extra)


# ---------------------------------------------------------------------------------------------
# checks before any work


def _fail(plan_source: str, key: str, reason: str) -> PgxInputError:
    return PgxInputError(f"{key}: {reason}", source=plan_source)


def _known_drug(name: str, source: str, key: str) -> str:
    try:
        resolved = resolve_drug(name)
        drug_model(resolved)  # the structure must be one this version simulates
    except PgxInputError as exc:  # unknown drug (UnknownDrug is one) or a structure not simulated
        raise _fail(source, key, str(exc)) from None
    return resolved


def plan_trial(spec: TrialSpec, source: str) -> TrialPlan:
    """Every check that needs the drug library or the population data, before any work."""
    known_groups = groups()
    for group in spec.population.mix:
        if group not in known_groups:
            raise _fail(source, f"population.mix.{group}", f"unknown population group (known: {', '.join(known_groups)})")
    mix_groups = tuple(g for g, f in spec.population.mix.items() if f > 0)
    available = frequency_genes()

    def genotyped(gene: str, key: str, why: str) -> None:
        if gene not in available:
            raise _fail(source, key, f"{why} {gene} genotypes, but the population has no {gene} allele frequencies"
                                     f" (genes with data: {', '.join(available)})")
        for group in mix_groups:
            if group not in groups_with_data(gene):
                raise _fail(source, key, f"{why} {gene} genotypes, but {gene} has no frequency data for {group}:"
                                         f" {missing_reason(gene, group)}")

    acting = sorted({p.drug.lower() for p in perpetrators()})
    for name in spec.population.comedication_prevalence:
        if name.strip().lower() not in acting:
            raise _fail(source, f"population.comedication_prevalence.{name}",
                        f"not a perpetrator drug of the library (known: {', '.join(acting)})")

    inclusion = spec.population.inclusion
    for gene, names in inclusion.phenotypes.items():
        genotyped(gene, f"population.inclusion.phenotypes.{gene}", "inclusion by phenotype needs")
        known = phenotype_names(gene)
        for k, name in enumerate(names):
            if name not in known:
                raise _fail(source, f"population.inclusion.phenotypes.{gene}[{k}]",
                            f"unknown {gene} phenotype {name!r} (known: {', '.join(known)})")

    drugs: list[tuple[str, str]] = []  # (key, library name) of every drug a patient may receive
    genes: dict[str, None] = dict.fromkeys(inclusion.phenotypes)
    resolved_arms = []
    for i, arm in enumerate(spec.arms):
        drug = _known_drug(arm.drug, source, f"arms[{i}].drug")
        alternative = _known_drug(arm.alternative, source, f"arms[{i}].alternative") if arm.alternative else None
        for key, name in [(f"arms[{i}].drug", drug)] + ([(f"arms[{i}].alternative", alternative)] if alternative else []):
            for gene in drug_model(name).genes:
                genotyped(gene, key, f"{name} needs")
                genes[gene] = None
            for gene in arms_mod.cpic_phenotypes(name, available):
                if all(g in groups_with_data(gene) for g in mix_groups):
                    genes[gene] = None
            drugs.append((key, name))
        _check_dose(spec, source, i, drug)
        resolved_arms.append(arm.model_copy(update={"drug": drug, "alternative": alternative}))
    if spec.stratify_by is not None:
        for k, gene in enumerate(spec.stratify_by):
            genotyped(gene, f"stratify_by[{k}]", "stratifying needs")
            genes[gene] = None
        stratify = tuple(spec.stratify_by)
    else:
        first = drug_model(resolved_arms[0].drug)
        stratify = tuple(first.genes) or tuple(g for g in arms_mod.cpic_phenotypes(first.drug.name, available) if g in genes)
    plan = TrialPlan(spec.model_copy(update={"arms": resolved_arms}), source, tuple(sorted(genes)), stratify)

    allowed = inclusion.phenotypes
    for key, name in drugs:
        _check_genotype_coverage(plan, key, name, mix_groups, allowed)
    for j, endpoint in enumerate(spec.endpoints):
        for key, name in drugs:
            problem = endpoint_problem(endpoint, name)
            if problem is not None:
                raise _fail(source, f"endpoints[{j}]", f"{endpoint} for {key} ({name}): {problem}")
    for i, arm in enumerate(plan.spec.arms):
        if arm.kind == "cpic":
            _check_cpic(plan, i, mix_groups, allowed)
        if arm.kind == "genotype_guided":
            from ..twin.regimen import candidate_regimens

            if not candidate_regimens(drug_model(arm.drug)):
                raise _fail(source, f"arms[{i}].drug", f"{arm.drug}: no candidate regimen within the labelled maxima")
    return plan


def _check_dose(spec: TrialSpec, source: str, i: int, drug: str) -> None:
    arm = spec.arms[i]
    if arm.dose is None:
        return
    try:
        dose = parse_dose(arm.dose)
    except ValueError as exc:
        raise _fail(source, f"arms[{i}].dose", str(exc)) from None
    reference = PatientFactors(weight_kg=70.0, height_cm=170.0)
    limit = drug_model(drug).drug.dosing.max_single_mg(reference.weight_kg)
    mg = dose.to_mg(weight_kg=reference.weight_kg, bsa_m2=reference.bsa_m2)
    if limit is not None and mg > IMPLAUSIBLE_FACTOR * limit[0]:
        raise _fail(source, f"arms[{i}].dose", f"{arm.dose!r} is implausible for {drug}: the maximum single dose is"
                                              f" {limit[0]:g} mg ({limit[1]})")


def _check_genotype_coverage(plan: TrialPlan, key: str, drug: str, mix_groups: tuple[str, ...], allowed) -> None:
    """Every genotype the population can hold must have a sourced effect in the drug's library file."""
    model = drug_model(drug)
    # every co-medication is checked alone (each phenoconverts its own gene; the model multiplies
    # the activities of several, so their combinations reach no effect these do not)
    given_comeds = [(), *((c.strip().lower(),) for c in plan.spec.population.comedication_prevalence)]
    for gene in model.genes:
        for diplotype, phenotype in arms_mod.reachable_genotypes(gene, mix_groups):
            if gene in allowed and phenotype not in allowed[gene]:
                continue
            given = arms_mod.gene_input(model, gene, diplotype, phenotype)
            for comeds in given_comeds:
                try:
                    arms_mod.typical_parameters(drug, ((gene, given),), comeds)
                except PgxInputError as exc:
                    who = f"{gene} {phenotype or diplotype} patients"
                    fix = f"exclude them with population.inclusion.phenotypes.{gene}"
                    if comeds:
                        who, fix = f"{who} taking {comeds[0]}", f"{fix} or drop {comeds[0]} from population.comedication_prevalence"
                    raise _fail(plan.source, key, f"{exc}; the population holds {who}: {fix}") from None


def _check_cpic(plan: TrialPlan, i: int, mix_groups: tuple[str, ...], allowed) -> None:
    arm = plan.spec.arms[i]
    genes = arms_mod.cpic_phenotypes(arm.drug, plan.genes)
    for phenotypes in arms_mod.reachable_phenotype_sets(genes, mix_groups, allowed):
        try:
            decision = arms_mod.cpic_decision(arm.drug, phenotypes)
        except ValueError as exc:
            raise _fail(plan.source, f"arms[{i}]", f"{exc} ({', '.join(f'{g} {p}' for g, p in phenotypes)})") from None
        if decision.kind == "alternative" and arm.alternative is None:
            who = ", ".join(f"{g} {p}" for g, p in phenotypes)
            raise _fail(plan.source, f"arms[{i}].alternative",
                        f"required: CPIC recommends another drug than {arm.drug} for {who} ({decision.text!r})")


# ---------------------------------------------------------------------------------------------
# one chunk


def _enrolled(plan: TrialPlan, table: pa.Table) -> np.ndarray:
    """Rows meeting the inclusion criteria (age is the generator's range)."""
    inclusion = plan.spec.population.inclusion
    keep = np.ones(table.num_rows, dtype=bool)
    if inclusion.sex is not None:
        sex = table.column("sex").combine_chunks()
        ok = np.isin(np.asarray(sex.dictionary.to_pylist(), dtype=object), inclusion.sex)
        keep &= ok[sex.indices.to_numpy()]
    for name, bounds in (("weight_kg", inclusion.weight_kg), ("crcl_ml_min", inclusion.crcl_ml_min)):
        if bounds is not None:
            values = table.column(name).to_numpy()
            if bounds[0] is not None:
                keep &= values >= bounds[0]
            if bounds[1] is not None:
                keep &= values <= bounds[1]
    for gene, names in inclusion.phenotypes.items():
        column = table.column(f"{gene}_phenotype").combine_chunks()
        ok = np.isin(np.asarray(column.dictionary.to_pylist(), dtype=object), names)
        keep &= ok[column.indices.to_numpy()]
    return keep


def _categorical(codes: np.ndarray, names: Sequence[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(list(names), type=pa.string()))


def simulate_chunk(plan: TrialPlan, replicate: int, start: int, size: int) -> tuple[pa.Table, dict[str, int]]:
    """Patients ``start`` .. ``start + size - 1`` of replicate ``replicate`` through every arm:
    one row per enrolled patient and arm; and the counts screened / enrolled."""
    population = generate_chunk(population_spec(plan, replicate), start, size)
    keep = _enrolled(plan, population)
    enrolled = population if keep.all() else population.filter(pa.array(keep))
    cohort = arms_mod.Cohort.from_table(enrolled, plan.genes)
    individuals: dict[str, dict[str, np.ndarray]] = {}

    def parameters(drug: str) -> dict[str, np.ndarray]:
        # the same individual parameters for a drug in every arm (common random numbers)
        if drug not in individuals:
            model = drug_model(drug)
            normals = standard_normals(variability_key(plan.spec.seed, replicate, drug), start, size, variability_size(drug))[keep]
            typical = arms_mod.cohort_typical_parameters(model, cohort)
            individuals[drug] = individual_parameters(model, typical, cohort.covariates, normals)
        return individuals[drug]

    tables = [_arm_table(plan, replicate, a, arm, cohort, enrolled, parameters) for a, arm in enumerate(plan.spec.arms)]
    table = pa.concat_tables(tables) if tables else enrolled.slice(0, 0)
    return table, {"screened": size, "enrolled": int(keep.sum())}


def _arm_table(plan: TrialPlan, replicate: int, index: int, arm, cohort: arms_mod.Cohort, enrolled: pa.Table,
               parameters: Callable[[str], dict[str, np.ndarray]]) -> pa.Table:
    n = cohort.size
    dosing = arms_mod.arm_dosing(arm, cohort, plan.genes)
    columns: dict[str, np.ndarray] = {name: np.full(n, np.nan) for name in EXPOSURE_COLUMNS}
    for endpoint in plan.endpoints:
        columns[ENDPOINT_COLUMNS[endpoint]] = np.full(n, np.nan) if endpoint == "time_in_window" else np.zeros(n, dtype=bool)
    for d, drug in enumerate(dosing.drugs):
        model = drug_model(drug)
        ends = drug_endpoints(drug)
        params = parameters(drug)
        of_drug = dosing.drug == d
        for tau in np.unique(dosing.interval_h[of_drug]):
            rows = np.flatnonzero(of_drug & (dosing.interval_h == tau))
            exposures = exposure(
                model, {k: v[rows] for k, v in params.items()}, dosing.dose_mg[rows], float(tau),
                doses_in(plan.duration_h, float(tau)), ends.outputs, ends.windows(plan.endpoints), cohort.index[rows],
            )
            main = exposures[ends.main_output]
            for name, values in zip(EXPOSURE_COLUMNS, (main.auc_tau, main.css_avg, main.cmax, main.trough)):
                columns[name][rows] = values
            for name, values in endpoint_values(ends, exposures, plan.endpoints).items():
                columns[name][rows] = values
    out = {
        "replicate": pa.array(np.full(n, replicate, dtype=np.int32)),
        "patient_id": enrolled.column("patient_id"),
        "arm": _categorical(np.full(n, index), [a.name for a in plan.spec.arms]),
        "drug": _categorical(dosing.drug, dosing.drugs),
        "regimen": _categorical(dosing.source, dosing.sources),
        "dose_mg": pa.array(dosing.dose_mg),
        "interval_h": pa.array(dosing.interval_h),
    }
    for name in ("group", "age", "sex", "weight_kg", "crcl_ml_min"):
        out[name] = enrolled.column(name)
    if plan.spec.population.comedication_prevalence:
        out["comedications"] = enrolled.column("comedications")
    for gene in plan.genes:
        out[f"{gene}_phenotype"] = enrolled.column(f"{gene}_phenotype")
    out |= {name: pa.array(values) for name, values in columns.items()}
    return pa.table(out)


# ---------------------------------------------------------------------------------------------
# the whole trial


@dataclass(frozen=True)
class TrialRun:
    folder: Path
    manifest: dict
    summary: Any  # trial_report.Summary
    config: Any  # trial_report.SummaryConfig


def prepare(path: str | Path, chunk_size: int | None = None) -> tuple[TrialPlan, int]:
    """Load and check a trial file and the chunk size (CLI option, else the file's, else the default)."""
    if chunk_size is not None and chunk_size < 1:
        raise PgxInputError(f"--chunk-size: must be at least 1 (got {chunk_size})")
    spec = load_trial(path)
    plan = plan_trial(spec, str(path))
    chunk = chunk_size or spec.chunk_size or DEFAULT_CHUNK_SIZE
    if any(not uses_fast_path(drug_model(d)) for d in plan.drugs):
        # engine-path drugs are solved in batches of ENGINE_BATCH population indices: no chunk may split one
        chunk = -(-chunk // ENGINE_BATCH) * ENGINE_BATCH
    return plan, chunk


def _check_output(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "manifest.json").is_file())):
        raise PgxInputError(f"-o: {str(folder)!r} exists and is not a trial results folder (no manifest.json)")
    if not folder.parent.is_dir():
        raise PgxInputError(f"-o: folder {str(folder.parent)!r} does not exist")


def run_trial(
    path: str | Path,
    output: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrialRun:
    """Run the trial in ``path`` into the results folder ``output`` (replaced only when complete).

    ``progress(done, total)`` is called with patients screened so far (all replicates)."""
    from . import execution, trial_report

    if workers is not None and workers < 1:
        raise PgxInputError(f"--workers: must be at least 1 (got {workers})")
    plan, chunk = prepare(path, chunk_size)
    folder = Path(output).resolve()
    _check_output(folder)
    work = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    (work / "patients").mkdir(parents=True)
    try:
        jobs = execution.plan_chunks(plan.spec.population.size, plan.spec.replicates, chunk)
        config = trial_report.config_of(plan)
        started = time.perf_counter()
        with execution.dask_client(workers, scheduler) as client:
            client.run(partial(warm_worker, plan))  # imports and library loads, outside the timed phase
            ready = time.perf_counter()
            results = execution.run_parts(
                client, jobs, build=partial(simulate_chunk, plan), summarise=trial_report.part_aggregator(config),
                folder=work / "patients", progress=progress,
            )
            seconds = time.perf_counter() - ready
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        timing = {"startup_seconds": ready - started, "seconds": seconds, "workers": n_workers}
        summary = trial_report.merge([r.aggregate for r in results], config)
        manifest = _manifest(plan, chunk, scheduler, results, timing)
        atomic_write(work / "trial.yaml", Path(path).read_bytes())
        trial_report.write_outputs(work, summary, config, manifest)
        atomic_write(work / "manifest.json", json.dumps(manifest, indent=2))
        _swap_into_place(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return TrialRun(folder, manifest, summary, config)


def warm_worker(plan: TrialPlan) -> None:
    """Load what every chunk needs (drug models, endpoint references, the population's tables)."""
    for drug in plan.drugs:
        drug_endpoints(drug)
    generate_chunk(population_spec(plan, 0), 0, 1)


def _swap_into_place(work: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
    os.replace(work, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _manifest(plan: TrialPlan, chunk: int, scheduler: str | None, results, timing: dict) -> dict:
    screened = sum(r.counts["screened"] for r in results)
    enrolled = sum(r.counts["enrolled"] for r in results)
    peak: dict[str, float] = {}
    for r in results:
        peak[r.worker] = max(peak.get(r.worker, 0.0), r.peak_rss_mb)
    return {
        "format": RESULT_FORMAT,
        "trial": plan.spec.model_dump(mode="json"),
        "source": plan.source,
        "plan": {"genes": list(plan.genes), "stratify_by": list(plan.stratify_by),
                 "population_seeds": [population_seed(plan.spec.seed, r) for r in range(plan.spec.replicates)]},
        "counts": {"screened": screened, "enrolled": enrolled, "rows": sum(r.rows for r in results)},
        "parts": sorted(r.name for r in results),
        "execution": {
            "scheduler": scheduler or "local", "workers": timing["workers"], "chunk_size": chunk, "tasks": len(results),
            "startup_seconds": timing["startup_seconds"], "seconds": timing["seconds"],
            "patients_per_second": screened / timing["seconds"] if timing["seconds"] > 0 else None,
            "peak_rss_mb_per_worker": peak,
        },
        "versions": {"pgxtwin": __version__, "knowledge_base": knowledge_base_version()["version"],
                     "drug_library_sha256": library_digest()},
    }
