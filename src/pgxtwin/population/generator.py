"""Virtual populations: a mix of CPIC biogeographic groups, Hardy–Weinberg diplotypes from CPIC
allele frequencies, phenotypes by the knowledge base's own rule, and adult covariates.

* Genotypes: each patient's two alleles are drawn independently from their group's allele
  frequencies (``knowledge/frequencies.py``; Hardy–Weinberg, as CPIC's own diplotype-frequency
  tables assume).  The phenotype of every allele pair is computed once per gene with
  :func:`pgxtwin.knowledge.phenotypes.phenotype_of`, the code path of a real patient.
* Covariates: ``covariates.py`` (NHANES-based, by sex and age band; the same US distributions
  for every group).
* Co-medications (optional): each named perpetrator drug (``knowledge/drugs/interactions.yaml``)
  is taken independently with the prevalence the user gives; no default prevalences (none is
  sourced).  Column ``comedications``: the drugs taken, ";"-joined in name order ("" for none),
  as :mod:`pgxtwin.pk.drug_model` reads them for phenoconversion.
* Reproducibility: patient ``i``'s values depend only on ``(seed, i)``, whatever the chunking.
  Each random stream (covariates, and one per gene) is a counter-based Philox generator keyed by
  (seed, stream); patient ``i`` owns a fixed run of 32-bit words of each stream, so a chunk
  starting at ``i`` sets the counter to the block holding its first word instead of drawing
  through the patients before it.  A gene's stream does not depend on which other genes are
  generated.  Uniforms have 32-bit resolution (2.3e-10), far finer than any frequency used.
* Arrow output: categorical columns are dictionary-encoded (group, sex, diplotype, phenotype).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PgxInputError
from ..knowledge.drugs import perpetrators
from ..knowledge.frequencies import (
    allele_frequencies,
    allele_sort_key,
    frequency_genes,
    groups,
    groups_with_data,
    missing_reason,
)
from ..knowledge.phenotypes import phenotype_names, phenotype_of
from .covariates import N_UNIFORMS, SEXES, check_age_range, sample_covariates

MIX_TOLERANCE = 1e-6
PHILOX_BLOCK = 4  # Philox4x64 yields 4 uint64 (8 random 32-bit words) per counter step
COVARIATE_WORDS = 6  # 32-bit words per patient: group + N_UNIFORMS covariates
GENE_WORDS = 2  # one 32-bit word per allele
MAX_COMEDICATIONS = 6  # the comedications column encodes every subset in an int8 dictionary
COVARIATE_STREAM = 0
GUIDE_BITS = 12  # allele guide tables: 2**12 cells per group, picked by a word's top bits
_WORD_SCALE = 2.0**-32


@dataclass(frozen=True)
class PopulationSpec:
    """What population to generate.

    ``mix``: group (snake case, e.g. ``east_asian``) -> fraction, summing to 1.
    ``genes``: genes to genotype, in column order; ``None`` means every gene with frequency
    data for all groups in the mix.  ``seed``: 0 <= seed < 2**64.  ``age_range``: years.
    ``comedication_prevalence``: perpetrator drug -> fraction of patients taking it (0..1),
    each drawn independently; user-supplied facts (the generator has no defaults).
    """

    mix: Mapping[str, float]
    genes: tuple[str, ...] | None = None
    seed: int = 0
    age_range: tuple[float, float] = (18.0, 85.0)
    comedication_prevalence: Mapping[str, float] | None = None


@dataclass(frozen=True)
class _GenePlan:
    gene: str
    n_alleles: int
    cumulative: np.ndarray  # per group g: cumulative frequencies + g, concatenated
    guide: np.ndarray  # per group g, per top-bits cell: the allele, or -1 where a boundary cuts it
    diplotype_index: np.ndarray  # (K*K,) int16: ordered allele pair -> diplotype dictionary index
    phenotype_index: np.ndarray  # (K*K,) int8: ordered allele pair -> phenotype dictionary index
    diplotypes: pa.Array
    phenotypes: pa.Array
    stream: int
    citations: tuple[str, ...]


@dataclass(frozen=True)
class _ComedicationPlan:
    drugs: tuple[str, ...]  # lower case, name order
    thresholds: np.ndarray  # (D,) uint64: drug d is taken when its word < thresholds[d]
    streams: tuple[int, ...]
    names: pa.Array  # subset code (bit d = drug d) -> ";"-joined names


@dataclass(frozen=True)
class _Plan:
    groups: tuple[str, ...]
    group_cumulative: np.ndarray
    genes: tuple[_GenePlan, ...]
    comedications: _ComedicationPlan
    seed: int
    age_range: tuple[float, float]
    schema: pa.Schema


def _stream_id(gene: str) -> int:
    """A fixed 64-bit stream number per gene (never 0, the covariate stream)."""
    return int.from_bytes(hashlib.sha256(gene.encode()).digest()[:8], "little") | 1


def _words(seed: int, stream: int, start: int, size: int, per_patient: int) -> np.ndarray:
    """(size, per_patient) random 32-bit words of patients start .. start+size-1 of a stream.

    Patient i owns words i*per_patient .. (i+1)*per_patient - 1 of the stream: the Philox
    counter is set to the block holding the chunk's first word (no drawing through earlier
    patients), and the words before it in that block are dropped."""
    first = start * per_patient
    per_block = 2 * PHILOX_BLOCK
    bitgen = np.random.Philox(key=np.array([seed, stream], dtype=np.uint64), counter=first // per_block)
    skip = first % per_block
    n_raw = -(-(skip + size * per_patient) // 2)  # uint64 draws covering the words we need
    words = bitgen.random_raw(n_raw).view(np.uint32)
    return words[skip : skip + size * per_patient].reshape(size, per_patient)


def _unit(words: np.ndarray) -> np.ndarray:
    """Random words -> uniforms in (0, 1), centred in their 2**-32 cell (never 0 or 1)."""
    return (words.astype(np.float64) + 0.5) * _WORD_SCALE


def _gene_plan(gene: str, mix_groups: tuple[str, ...]) -> _GenePlan:
    per_group = [allele_frequencies(gene, g) for g in mix_groups]
    alleles = sorted({a for f in per_group for a in f.alleles}, key=lambda a: allele_sort_key(gene, a))
    k = len(alleles)
    position = {a: i for i, a in enumerate(alleles)}
    segments, guides = [], []
    cell = np.arange(2**GUIDE_BITS, dtype=np.float64) * 2.0 ** (32 - GUIDE_BITS)
    first_u, last_u = (cell + 0.5) * _WORD_SCALE, (cell + 2.0 ** (32 - GUIDE_BITS) - 0.5) * _WORD_SCALE
    for g, freqs in enumerate(per_group):
        p = np.zeros(k)
        for allele, value in zip(freqs.alleles, freqs.frequencies):
            p[position[allele]] = value
        cum = np.cumsum(p)
        cum[-1] = 1.0  # exact end of the segment, whatever the float rounding
        segments.append(cum + g)
        # a cell whose lowest and highest uniform pick the same allele needs no search
        low, high = np.searchsorted(cum, first_u, side="right"), np.searchsorted(cum, last_u, side="right")
        guides.append(np.where(low == high, low, -1).astype(np.int16))
    names = list(phenotype_names(gene))
    diplotypes: list[str] = []
    dip_index = np.empty((k, k), dtype=np.int16)
    phe_index = np.empty((k, k), dtype=np.int8)
    for i in range(k):
        for j in range(i, k):
            phenotype = phenotype_of(gene, alleles[i], alleles[j]).phenotype
            if phenotype not in names:
                names.append(phenotype)
            dip_index[i, j] = dip_index[j, i] = len(diplotypes)
            phe_index[i, j] = phe_index[j, i] = names.index(phenotype)
            diplotypes.append(f"{alleles[i]}/{alleles[j]}")
    return _GenePlan(
        gene=gene,
        n_alleles=k,
        cumulative=np.concatenate(segments),
        guide=np.concatenate(guides),
        diplotype_index=dip_index.ravel(),
        phenotype_index=phe_index.ravel(),
        diplotypes=pa.array(diplotypes, type=pa.string()),
        phenotypes=pa.array(names, type=pa.string()),
        stream=_stream_id(gene),
        citations=tuple(sorted({f.citation for f in per_group})),
    )


def _check_mix(mix: Mapping[str, float]) -> tuple[str, ...]:
    known = groups()
    if not mix:
        raise PgxInputError("--mix: no groups given (e.g. european=0.6,east_asian=0.4)")
    for group, fraction in mix.items():
        if group not in known:
            raise PgxInputError(f"--mix: unknown group {group!r} (known: {', '.join(known)})")
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and fraction >= 0):
            raise PgxInputError(f"--mix: fraction of {group} must be a number >= 0, not {fraction!r}")
    total = float(sum(mix.values()))
    if abs(total - 1.0) > MIX_TOLERANCE:
        raise PgxInputError(f"--mix: fractions sum to {total:.6g}, not 1")
    return tuple(g for g in known if mix.get(g, 0.0) > 0.0)


def _check_genes(genes: tuple[str, ...] | None, mix_groups: tuple[str, ...]) -> tuple[str, ...]:
    if genes is None:
        return tuple(g for g in frequency_genes() if set(mix_groups) <= set(groups_with_data(g)))
    if len(set(genes)) != len(genes):
        raise PgxInputError(f"--genes: a gene is named twice in {', '.join(genes)}")
    for gene in genes:
        if gene not in frequency_genes():
            raise PgxInputError(f"--genes: no sourced allele frequencies for {gene!r} (genes with data: {', '.join(frequency_genes())})")
        for group in mix_groups:
            if group not in groups_with_data(gene):
                raise PgxInputError(f"--genes: {gene} has no frequency data for {group}: {missing_reason(gene, group)}")
    return tuple(genes)


def _comedication_plan(prevalence: tuple[tuple[str, float], ...]) -> _ComedicationPlan:
    known = sorted({p.drug.lower() for p in perpetrators()})
    drugs: dict[str, float] = {}
    for name, fraction in prevalence:
        drug = name.strip().lower()
        if drug not in known:
            raise PgxInputError(f"--comedication-prevalence: {name!r} is not a perpetrator drug of the library (known: {', '.join(known)})")
        if drug in drugs:
            raise PgxInputError(f"--comedication-prevalence: {drug} given twice")
        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise PgxInputError(f"--comedication-prevalence: prevalence of {drug} must lie in [0, 1], not {fraction!r}")
        drugs[drug] = float(fraction)
    if len(drugs) > MAX_COMEDICATIONS:
        raise PgxInputError(f"--comedication-prevalence: at most {MAX_COMEDICATIONS} drugs, not {len(drugs)}")
    names = sorted(drugs)
    subsets = [";".join(d for i, d in enumerate(names) if code >> i & 1) for code in range(2 ** len(names))]
    return _ComedicationPlan(
        drugs=tuple(names),
        # P(word < threshold) = prevalence, to 2**-32 (prevalence 1 takes every word)
        thresholds=np.array([round(drugs[d] * 2**32) for d in names], dtype=np.uint64),
        streams=tuple(_stream_id(f"comedication:{d}") for d in names),
        names=pa.array(subsets, type=pa.string()),
    )


def excluded_genes(spec: PopulationSpec) -> dict[str, str]:
    """Genes with frequency data that ``genes=None`` leaves out for this mix, and why."""
    mix_groups = _check_mix(spec.mix)
    out = {}
    for gene in frequency_genes():
        lacking = [g for g in mix_groups if g not in groups_with_data(gene)]
        if lacking:
            out[gene] = f"no frequency data for {', '.join(lacking)}"
    return out


def _schema(genes: tuple[_GenePlan, ...], metadata: dict[str, str]) -> pa.Schema:
    category8 = pa.dictionary(pa.int8(), pa.string())
    fields = [
        pa.field("patient_id", pa.int64(), nullable=False),
        pa.field("group", category8, nullable=False),
        pa.field("age", pa.float64(), nullable=False),
        pa.field("sex", category8, nullable=False),
        pa.field("weight_kg", pa.float64(), nullable=False),
        pa.field("height_cm", pa.float64(), nullable=False),
        pa.field("serum_creatinine_mg_dl", pa.float64(), nullable=False),
        pa.field("crcl_ml_min", pa.float64(), nullable=False),
        pa.field("comedications", category8, nullable=False),
    ]
    for plan in genes:
        fields.append(pa.field(f"{plan.gene}_diplotype", pa.dictionary(pa.int16(), pa.string()), nullable=False))
        fields.append(pa.field(f"{plan.gene}_phenotype", category8, nullable=False))
    return pa.schema(fields, metadata=metadata)


@lru_cache(maxsize=32)
def _plan_for(
    mix: tuple[tuple[str, float], ...],
    genes: tuple[str, ...] | None,
    seed: int,
    age_range: tuple[float, float],
    comedication_prevalence: tuple[tuple[str, float], ...],
) -> _Plan:
    mix_groups = _check_mix(dict(mix))
    if not 0 <= seed < 2**64:
        raise PgxInputError(f"--seed: must lie in [0, 2**64), not {seed}")
    try:
        ages = check_age_range(age_range)
    except (TypeError, ValueError) as exc:
        raise PgxInputError(f"--age-range: {exc}") from None
    gene_names = _check_genes(genes, mix_groups)
    plans = tuple(_gene_plan(g, mix_groups) for g in gene_names)
    comedications = _comedication_plan(comedication_prevalence)
    fractions = np.array([dict(mix)[g] for g in mix_groups])
    cumulative = np.cumsum(fractions / fractions.sum())
    cumulative[-1] = 1.0
    metadata = {
        "pgxtwin.population": json.dumps(
            {
                "seed": seed,
                "mix": {g: dict(mix)[g] for g in mix_groups},
                "genes": list(gene_names),
                "age_range_years": list(ages),
                "allele_frequency_sources": {p.gene: list(p.citations) for p in plans},
                "covariate_sources": "pgxtwin/knowledge/data/body_measures.yaml",
                "comedication_prevalence": dict(comedication_prevalence),
            }
        )
    }
    return _Plan(
        groups=mix_groups,
        group_cumulative=cumulative,
        genes=plans,
        comedications=comedications,
        seed=seed,
        age_range=ages,
        schema=_schema(plans, metadata),
    )


def _plan(spec: PopulationSpec) -> _Plan:
    genes = None if spec.genes is None else tuple(spec.genes)
    try:
        seed = operator.index(spec.seed)
    except TypeError:
        raise PgxInputError(f"--seed: must be an integer, not {spec.seed!r}") from None
    prevalence = tuple(sorted((spec.comedication_prevalence or {}).items()))
    return _plan_for(tuple(sorted(spec.mix.items())), genes, seed, tuple(spec.age_range), prevalence)


def schema(spec: PopulationSpec) -> pa.Schema:
    """Arrow schema of the population's table (validates the spec)."""
    return _plan(spec).schema


def _categorical(indices: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices), dictionary, safe=False)


def _alleles(gene: _GenePlan, group: np.ndarray, group_cell: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Allele indices (size, 2): allele j of group g is drawn when the word's uniform u falls in
    [cum_g[j-1], cum_g[j]).  The guide table answers most draws; draws in a cell cut by a
    boundary are searched in the cumulative frequencies (group g's segment spans (g, g+1])."""
    alleles = gene.guide[group_cell + (words >> np.uint32(32 - GUIDE_BITS)).astype(np.intp)].astype(np.intp)
    cut = alleles < 0
    if cut.any():
        rows = np.nonzero(cut)[0]
        u = _unit(words[cut]) + group[rows]
        alleles[cut] = np.searchsorted(gene.cumulative, u, side="right") - group[rows].astype(np.intp) * gene.n_alleles
    return alleles


def _comedication_codes(plan: _Plan, start: int, size: int) -> np.ndarray:
    """Per patient the subset of co-medications taken (bit d = drug d), one word per drug from
    the drug's own stream."""
    codes = np.zeros(size, dtype=np.int8)
    com = plan.comedications
    for d, stream in enumerate(com.streams):
        taken = _words(plan.seed, stream, start, size, 1)[:, 0].astype(np.uint64) < com.thresholds[d]
        codes |= taken.astype(np.int8) << np.int8(d)
    return codes


def generate_chunk(spec: PopulationSpec, start: int, size: int) -> pa.Table:
    """Patients ``start`` .. ``start + size - 1`` as an Arrow table (see :func:`schema`)."""
    plan = _plan(spec)
    if start < 0 or size < 0:
        raise ValueError(f"start={start} and size={size} must be >= 0")
    words = _words(plan.seed, COVARIATE_STREAM, start, size, COVARIATE_WORDS)
    group = np.searchsorted(plan.group_cumulative, _unit(words[:, 0]), side="right").astype(np.int8)
    cov = sample_covariates(words[:, 1 : 1 + N_UNIFORMS], plan.age_range)
    columns: list[pa.Array] = [
        pa.array(np.arange(start, start + size, dtype=np.int64)),
        _categorical(group, pa.array(plan.groups, type=pa.string())),
        pa.array(cov.age_years),
        _categorical(cov.sex_code, pa.array(SEXES, type=pa.string())),
        pa.array(cov.weight_kg),
        pa.array(cov.height_cm),
        pa.array(cov.serum_creatinine_mg_dl),
        pa.array(cov.crcl_ml_min),
        _categorical(_comedication_codes(plan, start, size), plan.comedications.names),
    ]
    group_cell = (group.astype(np.intp) << GUIDE_BITS)[:, None]
    for gene in plan.genes:
        alleles = _alleles(gene, group, group_cell, _words(plan.seed, gene.stream, start, size, GENE_WORDS))
        pair = alleles[:, 0] * gene.n_alleles + alleles[:, 1]
        columns.append(_categorical(gene.diplotype_index[pair], gene.diplotypes))
        columns.append(_categorical(gene.phenotype_index[pair], gene.phenotypes))
    return pa.Table.from_arrays(columns, schema=plan.schema)


def write_population(
    spec: PopulationSpec,
    n: int,
    path: Path,
    *,
    chunk_size: int = 262_144,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Stream ``n`` patients to a Parquet file at ``path``, chunk by chunk, atomically (a
    temporary file in the same folder, moved into place when complete).  ``progress`` is called
    with the number of patients in each chunk written."""
    if not isinstance(n, int) or n < 1:
        raise PgxInputError(f"--n: must be an integer >= 1, not {n!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    table_schema = schema(spec)  # validate before touching the disk
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise PgxInputError(f"-o: folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # dictionary-encode only the categorical columns: random floats gain nothing from it
        categorical = [f.name for f in table_schema if pa.types.is_dictionary(f.type)]
        with pq.ParquetWriter(tmp, table_schema, compression="zstd", use_dictionary=categorical) as writer:
            for start in range(0, n, chunk_size):
                size = min(chunk_size, n - start)
                writer.write_table(generate_chunk(spec, start, size), row_group_size=size)
                if progress is not None:
                    progress(size)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
