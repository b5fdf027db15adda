"""Write VCFs for tests and benchmarks from star-allele pairs.

Each requested gene gets a record at *every* defining position (the genome reference is written
where both of a sample's alleles carry the reference base), so the file implies exactly the
diplotypes it was built from.  Several known changes at one position (e.g. UGT1A1 rs34983651:
``C>CAT``, ``C>CATAT``, ``CAT>C``) become one multi-allelic record whose REF is the longest
reference and whose ALTs are the changes re-anchored on it.  Positions shared by two genes
(IFNL3/IFNL4) become one record.

Only the knowledge base (``gene_definition``) is used: nothing from the caller under test.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

from pgxtwin.knowledge.alleles import GeneDefinition, callable_genes, gene_definition

_ORDER = [str(i) for i in range(1, 23)] + ["X", "Y", "M"]
GRCH38_LENGTHS = dict(
    zip(
        _ORDER,
        [
            248956422, 242193529, 198295559, 190214555, 181538259, 170805979, 159345973, 145138636,
            138394717, 133797422, 135086622, 133275309, 114364328, 107043718, 101991189, 90338345,
            83257441, 80373285, 58617616, 64444167, 46709983, 50818468, 156040895, 57227415, 16569,
        ],
    )
)
GRCH37_LENGTHS = dict(
    zip(
        _ORDER,
        [
            249250621, 243199373, 198022430, 191154276, 180915260, 171115067, 159138663, 146364022,
            141213431, 135534747, 135006516, 133851895, 115169878, 107349540, 102531392, 90354753,
            81195210, 78077248, 59128983, 63025520, 48129895, 51304566, 155270560, 59373566, 16569,
        ],
    )
)
CONTIG_LENGTHS = {"GRCh38": GRCH38_LENGTHS, "GRCh37": GRCH37_LENGTHS}
_BASES = np.array(list("ACGT"))


def chrom_key(chrom: str) -> int:
    chrom = chrom.removeprefix("chr")
    return _ORDER.index("M" if chrom == "MT" else chrom)


@dataclass
class Site:
    """One VCF record: (ref, alt) pairs of every known change at the position."""

    chrom: str
    pos: int
    changes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return max((r for r, _ in self.changes), key=len)

    @property
    def alts(self) -> list[str]:
        ref = self.ref
        out = []
        for r, a in self.changes:
            assert ref.startswith(r), (self.chrom, self.pos, r, ref)
            out.append(a + ref[len(r):])
        return out

    def index_of(self, ref: str, alt: str) -> int:
        """ALT index (1-based) of a change, adding it if new."""
        if (ref, alt) not in self.changes:
            self.changes.append((ref, alt))
        return self.changes.index((ref, alt)) + 1


class SiteTable:
    """Records for a set of genes, and each gene's allele -> ALT-index matrix."""

    def __init__(self, genes: Iterable[str], assembly: str = "GRCh38") -> None:
        self.assembly = assembly
        self.sites: dict[tuple[str, int], Site] = {}
        self.definitions: dict[str, GeneDefinition] = {}
        self.keys: dict[str, list[tuple[str, int]]] = {}
        self.matrix: dict[str, np.ndarray] = {}  # gene -> (alleles, positions) ALT index, 0 = REF
        self.allele_index: dict[str, dict[str, int]] = {}
        for gene in genes:
            d = gene_definition(gene, assembly)
            self.definitions[gene] = d
            keys = []
            for p in d.positions:
                key = (p.chrom, p.pos)
                site = self.sites.setdefault(key, Site(p.chrom, p.pos))
                for v in p.variants:
                    site.index_of(v.ref, v.alt)
                keys.append(key)
            self.keys[gene] = keys
            col = {p.pos: i for i, p in enumerate(d.positions)}
            names = [a.name for a in d.alleles]
            self.allele_index[gene] = {n: i for i, n in enumerate(names)}
            m = np.zeros((len(names), len(keys)), dtype=np.int16)
            for ai, allele in enumerate(d.alleles):
                if allele.structural:
                    m[ai, :] = -9  # not representable
                    continue
                for v in allele.core:
                    m[ai, col[v.pos]] = self.sites[(v.chrom, v.pos)].index_of(v.ref, v.alt)
            self.matrix[gene] = m

    def ordered_keys(self) -> list[tuple[str, int]]:
        return sorted(self.sites, key=lambda k: (chrom_key(k[0]), k[1]))

    def genotypes(self, per_sample: Sequence[Mapping[str, tuple[str, str]]]) -> dict[tuple[str, int], np.ndarray]:
        """(samples, 2) ALT indices per site; genes a sample does not name are reference."""
        n = len(per_sample)
        gts = {k: np.zeros((n, 2), dtype=np.int16) for k in self.sites}
        for s, alleles in enumerate(per_sample):
            for gene, pair in alleles.items():
                if gene not in self.matrix:
                    raise KeyError(f"gene {gene} was not requested for this file")
                for h, name in enumerate(pair):
                    row = self.matrix[gene][self.allele_index[gene][name]]
                    if (row < 0).any():
                        raise ValueError(f"{gene} {name} is structural: not representable in a VCF")
                    for key, idx in zip(self.keys[gene], row):
                        if idx:
                            gts[key][s, h] = idx
        return gts

    def random_genotypes(self, n: int, rng: np.random.Generator, ref_weight: float = 0.7):
        """Realistic-ish population: each haplotype's allele is the reference allele with
        probability ``ref_weight``, else a non-structural allele with weight ~ 1/rank."""
        gts = {k: np.zeros((n, 2), dtype=np.int16) for k in self.sites}
        drawn: dict[str, np.ndarray] = {}
        for gene, d in self.definitions.items():
            ok = [i for i, a in enumerate(d.alleles) if not a.structural]
            ref = self.allele_index[gene][d.reference_allele]
            others = [i for i in ok if i != ref]
            w = np.array([1.0 / (r + 1) for r in range(len(others))])
            w = (1 - ref_weight) * w / w.sum() if len(others) else w
            choices = np.array([ref, *others])
            probs = np.concatenate([[ref_weight if len(others) else 1.0], w])
            idx = rng.choice(choices, size=(n, 2), p=probs / probs.sum())
            drawn[gene] = idx
            states = self.matrix[gene][idx]  # (n, 2, positions)
            for j, key in enumerate(self.keys[gene]):
                col = states[:, :, j]
                gts[key] = np.where(col > 0, col, gts[key])
        return gts, drawn


def header(samples: Sequence[str], *, chr_prefix: bool, contig_lengths: Mapping[str, int]) -> str:
    lines = ["##fileformat=VCFv4.2", "##source=pgxtwin-tests-vcfgen"]
    for chrom, length in contig_lengths.items():
        name = f"chr{chrom}" if chr_prefix else chrom
        lines.append(f"##contig=<ID={name},length={length}>")
    lines.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    lines.append("#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    return "\n".join(lines) + "\n"


def _gt_table(phased: bool, size: int = 16) -> np.ndarray:
    sep = "|" if phased else "/"
    return np.array([f"{a}{sep}{b}" for a in range(size) for b in range(size)], dtype=object)


def site_lines(
    table: SiteTable,
    gts: Mapping[tuple[str, int], np.ndarray],
    *,
    phased: bool,
    chr_prefix: bool,
    drop: Iterable[tuple[str, int]] = (),
    nocall: Iterable[tuple[str, int]] = (),
    gt_override: Mapping[tuple[str, int], str] | None = None,
    variants_only: bool = False,
) -> list[tuple[tuple[int, int], str]]:
    """((chrom order, pos), line) for every kept site (``variants_only``: skip sites where
    every sample is homozygous reference, as variant-only VCFs do)."""
    drop = set(drop)
    nocall = set(nocall)
    gt_override = dict(gt_override or {})
    lut = _gt_table(phased)
    out = []
    for key in table.ordered_keys():
        if key in drop:
            continue
        site = table.sites[key]
        g = gts[key]
        if variants_only and not g.any() and key not in gt_override and key not in nocall:
            continue
        if key in gt_override:
            cells = [gt_override[key]] * len(g)
        elif key in nocall:
            cells = ["./."] * len(g)
        else:
            cells = lut[g[:, 0].astype(np.int64) * 16 + g[:, 1]].tolist()
        chrom = f"chr{site.chrom}" if chr_prefix else site.chrom
        line = "\t".join([chrom, str(site.pos), ".", site.ref, ",".join(site.alts), "50", "PASS", ".", "GT", *cells])
        out.append(((chrom_key(site.chrom), site.pos), line))
    return out


def finish(plain: Path, bgzip: bool) -> Path:
    """Optionally bgzip + tabix-index ``plain``; returns the path of the file to call."""
    if not bgzip:
        return plain
    gz = Path(pysam.tabix_index(str(plain), preset="vcf", force=True, keep_original=False))
    return gz


def write_vcf(
    path: str | os.PathLike[str],
    samples: Mapping[str, Mapping[str, tuple[str, str]]],
    *,
    genes: Iterable[str] | None = None,
    assembly: str = "GRCh38",
    chr_prefix: bool = True,
    phased: bool = False,
    bgzip: bool = False,
    drop: Iterable[tuple[str, int]] = (),
    nocall: Iterable[tuple[str, int]] = (),
    gt_override: Mapping[tuple[str, int], str] | None = None,
    contig_lengths: Mapping[str, int] | None = None,
    variants_only: bool = False,
) -> Path:
    """Write the VCF implied by ``samples`` ({sample: {gene: (allele1, allele2)}}).

    ``genes``: genes to write records for (default: every gene a sample names).  ``drop``: loci
    (chrom without 'chr', pos) left out; ``nocall``: loci written as ``./.``; ``gt_override``: a
    literal GT for every sample at a locus; ``variants_only``: no records where every sample is
    homozygous reference (a variant-only VCF: reference sites are then *missing*).  ``bgzip`` writes ``path`` + ``.gz`` and a ``.tbi``
    and returns that path.  Phased haplotype 1 carries allele1.
    """
    path = Path(path)
    if genes is None:
        genes = sorted({g for a in samples.values() for g in a})
    table = SiteTable(list(genes), assembly)
    names = list(samples)
    gts = table.genotypes([samples[s] for s in names])
    lines = site_lines(
        table, gts, phased=phased, chr_prefix=chr_prefix, drop=drop, nocall=nocall, gt_override=gt_override,
        variants_only=variants_only,
    )
    lengths = contig_lengths if contig_lengths is not None else CONTIG_LENGTHS[assembly]
    with open(path, "w") as out:
        out.write(header(names, chr_prefix=chr_prefix, contig_lengths=lengths))
        for _, line in lines:
            out.write(line + "\n")
    return finish(path, bgzip)


def write_population_vcf(
    path: str | os.PathLike[str],
    n_samples: int,
    *,
    genes: Iterable[str] | None = None,
    seed: int = 0,
    phased: bool = False,
    chr_prefix: bool = True,
    bgzip: bool = False,
    ref_weight: float = 0.7,
) -> tuple[Path, dict[str, np.ndarray]]:
    """Many samples with random (reference-weighted) diplotypes at the pharmacogene loci.

    Returns the file and, per gene, the (samples, 2) indices into ``gene_definition(gene).alleles``.
    """
    table = SiteTable(list(genes) if genes is not None else list(callable_genes()))
    gts, drawn = table.random_genotypes(n_samples, np.random.default_rng(seed), ref_weight)
    names = [f"S{i:05d}" for i in range(n_samples)]
    path = Path(path)
    with open(path, "w") as out:
        out.write(header(names, chr_prefix=chr_prefix, contig_lengths=GRCH38_LENGTHS))
        for _, line in site_lines(table, gts, phased=phased, chr_prefix=chr_prefix):
            out.write(line + "\n")
    return finish(path, bgzip), drawn


def write_genome_like_vcf(
    path: str | os.PathLike[str],
    *,
    n_filler: int = 2_500_000,
    seed: int = 0,
    sample: str = "WGS0001",
    chr_prefix: bool = True,
    phased: bool = False,
) -> Path:
    """A whole-genome-like single-sample VCF, bgzipped + tabix-indexed (returns the .gz path).

    ``n_filler`` random SNV records spread over the autosomes and X by length, plus a record at
    every defining position of every callable gene (random reference-weighted diplotypes).
    """
    rng = np.random.default_rng(seed)
    table = SiteTable(list(callable_genes()))
    gts, _ = table.random_genotypes(1, rng)
    defining = site_lines(table, gts, phased=phased, chr_prefix=chr_prefix)
    by_chrom: dict[int, list[tuple[int, str]]] = {}
    for (ck, pos), line in defining:
        by_chrom.setdefault(ck, []).append((pos, line))
    taken: dict[str, set[int]] = {}
    for d in table.definitions.values():
        for p in d.positions:
            for locus in p.loci:
                # leave room for multi-base REFs of the defining records
                taken.setdefault(p.chrom, set()).update(range(locus - 10, locus + 11))

    chroms = [c for c in _ORDER if c not in ("Y", "M")]
    lengths = np.array([GRCH38_LENGTHS[c] for c in chroms], dtype=np.float64)
    counts = np.floor(n_filler * lengths / lengths.sum()).astype(int)
    sep = "|" if phased else "/"
    gt_choices = np.array([f"0{sep}1", f"1{sep}1"], dtype=object)
    path = Path(path)
    with open(path, "w") as out:
        out.write(header([sample], chr_prefix=chr_prefix, contig_lengths=GRCH38_LENGTHS))
        for chrom, count in zip(chroms, counts):
            ck = chrom_key(chrom)
            pos = np.unique(rng.integers(10_000, GRCH38_LENGTHS[chrom] - 10_000, size=count))
            if chrom in taken:
                pos = pos[~np.isin(pos, np.fromiter(taken[chrom], dtype=np.int64))]
            ref_i = rng.integers(0, 4, size=len(pos))
            alt_i = (ref_i + rng.integers(1, 4, size=len(pos))) % 4
            gt = gt_choices[(rng.random(len(pos)) < 0.4).astype(np.int64)]
            name = f"chr{chrom}" if chr_prefix else chrom
            filler = [
                (p, f"{name}\t{p}\t.\t{r}\t{a}\t50\tPASS\t.\tGT\t{g}")
                for p, r, a, g in zip(pos.tolist(), _BASES[ref_i].tolist(), _BASES[alt_i].tolist(), gt.tolist())
            ]
            extra = by_chrom.pop(ck, [])
            if extra:
                filler.extend(extra)
                filler.sort(key=lambda t: t[0])
            # big chunks: one write per chromosome
            out.write("\n".join(line for _, line in filler))
            out.write("\n")
        for ck in sorted(by_chrom):  # defining records on Y/M (none expected besides MT-RNR1)
            out.write("\n".join(line for _, line in sorted(by_chrom[ck])) + "\n")
    return finish(path, True)


def cache_dir() -> Path:
    """Where generated benchmark data lives (outside the repository)."""
    root = os.environ.get("PGXTWIN_BENCH_CACHE") or os.path.join(tempfile.gettempdir(), "pgxtwin-bench-cache")
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root)


def cached(name: str, build) -> Path:
    """Build ``name`` in the cache dir once (``build(path) -> Path`` of the file to use)."""
    root = cache_dir()
    marker = root / (name + ".done")
    if marker.is_file():
        target = Path(marker.read_text().strip())
        if target.is_file():
            return target
    t0 = time.perf_counter()
    target = Path(build(root / name))
    marker.write_text(str(target))
    print(f"# generated {target} in {time.perf_counter() - t0:.1f} s")
    return target
