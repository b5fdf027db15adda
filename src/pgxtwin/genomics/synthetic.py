"""Write the VCF that given diplotypes imply: a record at every defining position.

Used for the bundled demo patient, property tests and benchmarks: what a perfect genotyping
assay would report for those star alleles (GRCh38 or GRCh37, per the knowledge base).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_write
from ..knowledge.alleles import Allele, GeneDefinition, Position, gene_definition

CONTIG_LENGTHS_GRCH38 = {
    "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259, "6": 170805979,
    "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422, "11": 135086622, "12": 133275309,
    "13": 114364328, "14": 107043718, "15": 101991189, "16": 90338345, "17": 83257441, "18": 80373285,
    "19": 58617616, "20": 64444167, "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415, "M": 16569,
}

Diplotypes = Mapping[str, tuple[str, str]]  # gene -> (allele1, allele2)


def allele_state(position: Position, allele: Allele) -> int:
    """0 for the genome reference base, k for the k-th known change at ``position``."""
    for k, variant in enumerate(position.variants, start=1):
        if variant in allele.core:
            return k
    return 0


def _records(definitions: Sequence[GeneDefinition], samples: Mapping[str, Diplotypes], phased: bool) -> list[str]:
    lines = []
    sep = "|" if phased else "/"
    for definition in definitions:
        for position in definition.positions:
            states = []
            for diplotypes in samples.values():
                a, b = diplotypes.get(definition.name, (definition.reference_allele,) * 2)
                states.append((allele_state(position, definition.allele(a)), allele_state(position, definition.allele(b))))
            # a shared REF spanning every change at this position (e.g. UGT1A1 C / CAT)
            ref = position.ref
            alts = []
            for variant in position.variants:
                suffix = ref[len(variant.ref):]
                alts.append(variant.alt + suffix)
            gts = "\t".join(f"{s1}{sep}{s2}" for s1, s2 in states)
            lines.append(
                f"{position.chrom}\t{position.pos}\t{position.rsid or '.'}\t{ref}\t{','.join(alts)}\t.\tPASS\t.\tGT\t{gts}"
            )
    return lines


def write_vcf(
    path: str | os.PathLike[str],
    samples: Mapping[str, Diplotypes],
    genes: Sequence[str],
    *,
    assembly: str = "GRCh38",
    phased: bool = False,
    chr_prefix: bool = True,
) -> Path:
    """Write (atomically) a VCF with one column per sample, records at every defining position."""
    definitions = [gene_definition(g, assembly) for g in genes]
    for diplotypes in samples.values():
        for gene, pair in diplotypes.items():
            definition = gene_definition(gene, assembly)
            for name in pair:
                definition.allele(name)  # KeyError on an unknown allele
    body = _records(definitions, samples, phased)
    body.sort(key=lambda line: (list(CONTIG_LENGTHS_GRCH38).index(line.split("\t", 1)[0]), int(line.split("\t", 2)[1])))
    prefix = "chr" if chr_prefix else ""
    header = ["##fileformat=VCFv4.2", f"##reference={assembly}"]
    if assembly == "GRCh38":
        header += [f"##contig=<ID={prefix}{c},length={n},assembly=GRCh38>" for c, n in CONTIG_LENGTHS_GRCH38.items()]
    header.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples))
    text = "\n".join(header + [prefix + line for line in body]) + "\n"
    target = atomic_write(path, text)
    return target
