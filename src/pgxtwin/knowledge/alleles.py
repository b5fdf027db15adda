"""Star-allele definitions per gene and assembly: pypgx's allele and variant tables + the overlay.

Semantics (as in pypgx): an allele's *core* lists its differences from the genome reference of
the assembly; every other defining position carries the genome reference base.  Tag variants
are not required for a call and are ignored.  Structural alleles (whole-gene deletions,
hybrids) cannot be seen in SNV/indel data and are left out of matching (reported in notes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from .overlay import AddAllele, AddCoreVariant, FullySpecified, OptionalVariant, VariantSynonym, load_overlay
from .tables import read_table

ASSEMBLIES = ("GRCh38", "GRCh37")
# Genes whose star alleles are dominated by copy-number and hybrid structures; an SNV-only call
# would be wrong more often than right, so they come from outside calls (e.g. a CNV-aware caller).
OUTSIDE_CALL_ONLY = frozenset({"CYP2D6", "CYP2A6", "GSTM1", "GSTT1", "UGT2B17", "HLA-A", "HLA-B"})


def trim_alleles(ref: str, alt: str) -> tuple[int, str, str]:
    """Minimal representation of a REF/ALT pair: drop the shared suffix, then the shared prefix
    beyond one anchor base.  Returns (offset of the new first base, ref, alt).

    Makes e.g. ``CAT>CATAT`` and ``C>CAT`` (UGT1A1*28) compare equal at the same position.
    """
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    offset = 0
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, offset = ref[1:], alt[1:], offset + 1
    return offset, ref, alt


@dataclass(frozen=True)
class Variant:
    """One allele-defining change, ``chrom-pos-ref-alt`` in VCF style (1-based, anchored indels)."""

    chrom: str
    pos: int
    ref: str
    alt: str

    @classmethod
    def parse(cls, text: str) -> "Variant":
        chrom, pos, ref, alt = text.split("-")
        return cls(chrom, int(pos), ref, alt)

    @property
    def key(self) -> tuple[int, str, str]:
        """Normalised (position, ref, alt) for comparison with observed alleles."""
        offset, ref, alt = trim_alleles(self.ref, self.alt)
        return self.pos + offset, ref, alt

    def __str__(self) -> str:
        return f"{self.chrom}-{self.pos}-{self.ref}-{self.alt}"


@dataclass(frozen=True)
class Position:
    """A defining position: where the VCF is read, and which changes are known there."""

    chrom: str
    pos: int
    ref: str
    rsid: str | None
    variants: tuple[Variant, ...]  # index i+1 is allele state i+1; state 0 is the genome reference
    synonyms: tuple[tuple[Variant, int], ...] = ()  # (other representation, state it stands for)

    @property
    def loci(self) -> tuple[int, ...]:
        """VCF positions to read for this defining position (synonyms may sit elsewhere)."""
        return tuple(sorted({self.pos, *(v.pos for v, _ in self.synonyms)}))

    @property
    def label(self) -> str:
        return f"{self.chrom}:{self.pos}" + (f" ({self.rsid})" if self.rsid else "")


@dataclass(frozen=True)
class Allele:
    name: str
    function: str | None
    activity_value: float | None
    core: frozenset[Variant]
    structural: bool
    optional: frozenset[Variant] = frozenset()  # may or may not be carried (CPIC IUPAC codes)
    fully_specified: bool = False  # states every defining position (ranks like the reference)


@dataclass(frozen=True)
class GeneDefinition:
    """Everything the matcher needs for one gene in one assembly."""

    name: str
    assembly: str
    chrom: str
    region: tuple[int, int]
    reference_allele: str
    phenotype_method: str | None  # "Diplotype", "Score" or None (no phenotype rule)
    alleles: tuple[Allele, ...]  # knowledge-base order (used for canonical diplotype strings)
    positions: tuple[Position, ...]
    structural_alleles: tuple[str, ...] = field(default=())

    def allele(self, name: str) -> Allele:
        for allele in self.alleles:
            if allele.name == name:
                return allele
        raise KeyError(name)

    @cached_property
    def allele_order(self) -> dict[str, int]:
        return {a.name: i for i, a in enumerate(self.alleles)}


def _na(value: str) -> str | None:
    return None if value in ("N/A", "") else value


def _float(value: str) -> float | None:
    value = _na(value)
    return None if value is None else float(value)


def _variants(cell: str) -> list[Variant]:
    text = _na(cell)
    return [] if text is None else [Variant.parse(v) for v in text.split(",")]


@lru_cache(maxsize=None)
def gene_definition(gene: str, assembly: str = "GRCh38") -> GeneDefinition:
    """Build the definition of ``gene`` for ``assembly`` from pypgx's tables and the overlay."""
    if assembly not in ASSEMBLIES:
        raise ValueError(f"unknown assembly {assembly!r} (expected GRCh38 or GRCh37)")
    gene_rows = {r["Gene"]: r for r in read_table("gene-table.csv")}
    if gene not in gene_rows:
        raise KeyError(gene)
    info = gene_rows[gene]
    overlay = load_overlay().for_gene(gene, assembly)
    rsids = {
        r[f"{assembly}Name"]: _na(r["rsID"]) for r in read_table("variant-table.csv") if r["Gene"] == gene
    }

    alleles: list[Allele] = []
    structural: list[str] = []
    for row in read_table("allele-table.csv"):
        if row["Gene"] != gene:
            continue
        core = set(_variants(row[f"{assembly}Core"]))
        is_sv = row["SV"] == "TRUE"
        if is_sv:
            structural.append(row["StarAllele"])
        for fix in overlay:
            if isinstance(fix, AddCoreVariant) and not is_sv and row["StarAllele"] not in fix.except_:
                core.add(Variant.parse(fix.variant))
        optional = frozenset(
            Variant.parse(f.variant)
            for f in overlay
            if isinstance(f, OptionalVariant) and f.allele == row["StarAllele"]
        )
        alleles.append(
            Allele(
                name=row["StarAllele"],
                function=_na(row["Function"]),
                activity_value=_float(row["ActivityScore"]),
                core=frozenset(core),
                structural=is_sv,
                optional=optional,
                fully_specified=any(
                    isinstance(f, FullySpecified) and f.allele == row["StarAllele"] for f in overlay
                ),
            )
        )
    for fix in overlay:
        if isinstance(fix, AddAllele):
            alleles.append(
                Allele(
                    name=fix.allele,
                    function=fix.function,
                    activity_value=fix.activity_value,
                    core=frozenset({Variant.parse(fix.variant)}),
                    structural=False,
                )
            )

    by_pos: dict[int, list[Variant]] = {}
    for allele in alleles:
        if allele.structural:
            continue
        for variant in allele.core | allele.optional:
            bucket = by_pos.setdefault(variant.pos, [])
            if variant not in bucket:
                bucket.append(variant)
    synonyms = [
        (Variant.parse(f.variant), Variant.parse(f.synonym)) for f in overlay if isinstance(f, VariantSynonym)
    ]
    positions = []
    for pos in sorted(by_pos):
        variants = tuple(sorted(by_pos[pos], key=lambda v: (len(v.ref), v.alt)))
        syn = tuple((s, variants.index(v) + 1) for v, s in synonyms if v in variants)
        positions.append(
            Position(
                chrom=variants[0].chrom,
                pos=pos,
                ref=max((v.ref for v in variants), key=len),
                rsid=next((rsids.get(str(v)) for v in variants if rsids.get(str(v))), None),
                variants=variants,
                synonyms=syn,
            )
        )

    start, end = info[f"{assembly}Region"].split(":")[1].split("-")
    method = _na(info["PhenotypeMethod"])
    return GeneDefinition(
        name=gene,
        assembly=assembly,
        chrom=info[f"{assembly}Region"].split(":")[0],
        region=(int(start), int(end)),
        reference_allele=info["RefAllele"],
        phenotype_method=method,
        alleles=tuple(alleles),
        positions=tuple(positions),
        structural_alleles=tuple(structural),
    )


@lru_cache(maxsize=None)
def callable_genes() -> tuple[str, ...]:
    """Genes the knowledge base can call from SNVs/indels: small-variant definitions for at
    least two alleles, and not dominated by structural variation (see ``OUTSIDE_CALL_ONLY``)."""
    genes = []
    counts: dict[str, int] = {}
    for row in read_table("allele-table.csv"):
        if row["SV"] != "TRUE":
            counts[row["Gene"]] = counts.get(row["Gene"], 0) + 1
    for row in read_table("gene-table.csv"):
        gene = row["Gene"]
        if row["Variants"] == "TRUE" and counts.get(gene, 0) >= 2 and gene not in OUTSIDE_CALL_ONLY:
            genes.append(gene)
    return tuple(genes)


@lru_cache(maxsize=None)
def known_genes() -> tuple[str, ...]:
    """Every gene the knowledge base names (callable or outside-call only)."""
    return tuple(r["Gene"] for r in read_table("gene-table.csv")) + tuple(
        g for g in ("HLA-A", "HLA-B") if g not in {r["Gene"] for r in read_table("gene-table.csv")}
    )
