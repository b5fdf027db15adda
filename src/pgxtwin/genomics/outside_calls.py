"""Outside calls: diplotypes or phenotypes typed elsewhere (CYP2D6 from a copy-number-aware
caller, HLA-A/HLA-B from an HLA typer), validated against the knowledge base and merged.

File format (PharmCAT's outside-call TSV): ``GENE<TAB>DIPLOTYPE[<TAB>PHENOTYPE[<TAB>ACTIVITY]]``,
``#`` comments.  Either the diplotype or the phenotype may be empty.  Allele names may carry the
gene prefix (``CYP2D6*4``, ``B*57:01``) and PharmVar sub-allele suffixes (``*2.034``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PgxInputError
from ..knowledge.alleles import gene_definition, known_genes
from ..knowledge.phenotypes import INDETERMINATE, PhenotypeCall, phenotype_from_score, phenotype_names, phenotype_of
from .result import AlleleInfo, GeneResult

_HLA_ALLELE = re.compile(r"^\*\d{2,3}(:\d{2,3}){0,3}[A-Z]?$")
_COPIES = re.compile(r"^(?P<allele>.+?)x(?P<copies>\d)$")  # CYP2D6 duplications: *1x2, *4x3


@dataclass(frozen=True)
class OutsideCall:
    gene: str
    diplotype: str | None  # canonical, e.g. "*1/*4"
    phenotype: str | None
    source: str


def _strip_allele(gene: str, name: str) -> str:
    name = name.strip()
    for prefix in (gene, gene.removeprefix("HLA-")):
        if name.startswith(prefix + "*"):
            name = name[len(prefix):]
    return name


def resolve_allele(gene: str, raw: str, where: str, line: int | None) -> str:
    """The knowledge base's name of an allele as written in an outside call (``*1x2``, ``HLA-B*57:01``)."""
    name = _strip_allele(gene, raw)
    if gene.startswith("HLA-"):
        if not _HLA_ALLELE.match(name):
            raise PgxInputError(f"{gene}: {raw!r} is not an HLA allele name (e.g. *57:01)", source=where, line=line)
        return name
    names = [a.name for a in gene_definition(gene).alleles]
    if name in names:
        return name
    suffix = ""
    copies = _COPIES.match(name)
    if copies and gene_definition(gene).phenotype_method == "Score":
        name, suffix = copies.group("allele"), f"x{copies.group('copies')}"
    core = name.split(".")[0]  # PharmVar sub-allele (*2.034) -> core allele (*2)
    for candidate in (name, core):
        if candidate in names:
            return candidate + suffix
    raise PgxInputError(f"{gene}: unknown allele {raw!r} in the knowledge base", source=where, line=line)


def _split_copies(name: str) -> tuple[str, int]:
    """``*1x2`` -> (``*1``, 2); ``*4`` -> (``*4``, 1)."""
    match = _COPIES.match(name)
    return (match.group("allele"), int(match.group("copies"))) if match else (name, 1)


def read_outside_calls(path: str | Path) -> list[OutsideCall]:
    """Parse and validate an outside-call TSV; errors name the file and line."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PgxInputError(f"cannot read outside calls ({exc})", source=where) from None
    calls: list[OutsideCall] = []
    genes = set(known_genes())
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        gene = fields[0]
        if gene not in genes:
            raise PgxInputError(f"unknown gene {gene!r}", source=where, line=number)
        diplotype = fields[1] if len(fields) > 1 and fields[1] else None
        phenotype = fields[2] if len(fields) > 2 and fields[2] else None
        if diplotype is None and phenotype is None:
            raise PgxInputError(f"{gene}: neither a diplotype nor a phenotype given", source=where, line=number)
        canonical = None
        if diplotype is not None:
            parts = diplotype.split("/")
            if len(parts) != 2:
                raise PgxInputError(f"{gene}: diplotype {diplotype!r} is not 'A/B'", source=where, line=number)
            a, b = (resolve_allele(gene, p, where, number) for p in parts)
            canonical = canonical_diplotype(gene, a, b)
        if phenotype is not None and not gene.startswith("HLA-"):
            allowed = phenotype_names(gene)
            if allowed and phenotype not in allowed:
                raise PgxInputError(
                    f"{gene}: unknown phenotype {phenotype!r} (known: {', '.join(allowed)})", source=where, line=number
                )
        if any(c.gene == gene for c in calls):
            raise PgxInputError(f"{gene}: given twice", source=where, line=number)
        calls.append(OutsideCall(gene=gene, diplotype=canonical, phenotype=phenotype, source=where))
    return calls


def canonical_diplotype(gene: str, a: str, b: str) -> str:
    """``a/b`` in the knowledge base's allele order (``*2/*1`` -> ``*1/*2``)."""
    if gene.startswith("HLA-"):
        return "/".join(sorted((a, b)))
    order = gene_definition(gene).allele_order
    return "/".join(sorted((a, b), key=lambda n: (order[_split_copies(n)[0]], n)))


def outside_gene_result(call: OutsideCall, assembly: str = "GRCh38") -> GeneResult:
    """A ``GeneResult`` with status ``outside_call`` (phenotype derived when not given)."""
    alleles: list[AlleleInfo] = []
    phenotype = PhenotypeCall(call.phenotype or INDETERMINATE, None)
    if call.diplotype is not None and not call.gene.startswith("HLA-"):
        (a, copies_a), (b, copies_b) = (_split_copies(n) for n in call.diplotype.split("/"))
        derived = phenotype_of(call.gene, a, b, assembly)
        if copies_a > 1 or copies_b > 1:
            # activity score counts every copy (CPIC: *1x2 has activity value 2 x 1)
            definition = gene_definition(call.gene, assembly)
            values = [definition.allele(a).activity_value, definition.allele(b).activity_value]
            if None in values:
                derived = PhenotypeCall(INDETERMINATE, None)
            else:
                score = values[0] * copies_a + values[1] * copies_b  # type: ignore[operator]
                derived = PhenotypeCall(phenotype_from_score(call.gene, score), score)
        if call.phenotype is None:
            phenotype = derived
        else:
            phenotype = PhenotypeCall(call.phenotype, derived.activity_score)
        definition = gene_definition(call.gene, assembly)
        for name in dict.fromkeys((a, b)):
            allele = definition.allele(name)
            alleles.append(AlleleInfo(name=name, function=allele.function, activity_value=allele.activity_value))
    elif call.diplotype is not None:
        phenotype = PhenotypeCall(call.phenotype or "n/a", None)
        alleles = [AlleleInfo(name=n, function=None, activity_value=None) for n in dict.fromkeys(call.diplotype.split("/"))]
    return GeneResult(
        status="outside_call", diplotypes=[call.diplotype] if call.diplotype else [], phenotype=phenotype.phenotype,
        activity_score=phenotype.activity_score, alleles=alleles, missing_positions=[], unexpected_variants=[],
        notes=[f"outside call from {call.source}"],
    )


def merge_outside_calls(genes: dict[str, GeneResult], calls: Sequence[OutsideCall], assembly: str) -> None:
    """Outside calls replace the VCF-based call of the same gene (the VCF call is kept in a note)."""
    for call in calls:
        result = outside_gene_result(call, assembly)
        previous = genes.get(call.gene)
        if previous is not None:
            result.notes.append(
                f"replaces the VCF call ({previous.status}: {', '.join(previous.diplotypes[:3]) or 'none'})"
            )
        genes[call.gene] = result
