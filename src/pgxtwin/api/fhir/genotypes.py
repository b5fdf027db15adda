"""Genotype and phenotype text as labs report it in Genomics Reporting IG Observations, read into
the knowledge base's terms.

Spellings met in the IG 3.0.0 examples and the genomics-operations reference server:
``CYP2C19*2/*2``, ``CYP2C19 *1/*17``, ``CYP2D6*7.001 / CYP2D6*1.001`` (PharmVar sub-alleles),
``HLA-B*15:02`` (one allele: a carrier), ``VKORC1 rs9923231 C/T`` (a single-variant gene), and
phenotypes as LOINC answers (``LA9657-3`` Poor metabolizer) or free text (``CYP2C19 Rapid Metabolizer``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import PgxInputError
from ...genomics.outside_calls import OutsideCall, canonical_diplotype, resolve_allele, outside_gene_result
from ...genomics.result import AlleleInfo, GeneResult
from ...knowledge.alleles import gene_definition, known_genes
from ...knowledge.phenotypes import NO_RULE, phenotype_names
from . import codes
from .fhirjson import as_str, components, texts

_RSID_GENOTYPE = re.compile(r"^(rs\d+)\s+([ACGT]+)\s*/\s*([ACGT]+)$", re.IGNORECASE)


class GenotypeError(ValueError):
    """A genotype or phenotype that cannot be read into the knowledge base's terms (the message says why)."""


@dataclass(frozen=True)
class GenotypeCall:
    """One gene's result as reported: a canonical diplotype, or alleles carried without a partner (HLA)."""

    gene: str
    diplotype: str | None
    carried: tuple[str, ...] = ()
    reported: str = ""


def gene_symbol(text: str | None) -> str | None:
    """The knowledge base's gene for a symbol or HGNC id (case-insensitive), else None."""
    if not text:
        return None
    text = text.strip()
    if text in codes.GENE_BY_HGNC_ID:
        return codes.GENE_BY_HGNC_ID[text]
    by_upper = {g.upper(): g for g in known_genes()}
    return by_upper.get(text.upper())


def gene_studied(resource: dict) -> str | None:
    """The gene of a genomic Observation's gene-studied component (48018-6), when the KB knows it."""
    for component in components(resource, codes.GENE_STUDIED, codes.LOINC):
        for text in texts(component.get("valueCodeableConcept")):
            gene = gene_symbol(text)
            if gene:
                return gene
    return None


def leading_gene(text: str) -> str | None:
    """The gene a text starts with (``CYP2C19*2/*2``, ``CYP2C19 Rapid Metabolizer``, ``HLA-B*15:02``)."""
    head = re.split(r"[\s*]", text.strip(), maxsplit=1)[0]
    return gene_symbol(head)


def _strip_gene(gene: str, text: str) -> str:
    out = text.strip()
    for prefix in (gene, gene.removeprefix("HLA-")):
        if out.upper().startswith(prefix.upper()) and out[len(prefix):len(prefix) + 1] in (" ", "*", "\t"):
            return out[len(prefix):].strip()
    return out


def _allele(gene: str, raw: str) -> str:
    token = re.sub(r"\s+", "", raw)
    token = _strip_gene(gene, token) if not token.startswith("*") else token
    if not token.startswith("*") and not gene.startswith("HLA-") and token not in _allele_names(gene):
        token = "*" + token if re.match(r"^\d", token) else token
    try:
        return resolve_allele(gene, token, "", None)
    except PgxInputError as exc:
        raise GenotypeError(str(exc).removeprefix(": ")) from None


def _allele_names(gene: str) -> set[str]:
    return {a.name for a in gene_definition(gene).alleles}


def parse_genotype(gene: str, text: str) -> GenotypeCall:
    """``text`` (one of the spellings above) as a call for ``gene``; :class:`GenotypeError` says why not."""
    body = _strip_gene(gene, text)
    rsid = _RSID_GENOTYPE.match(body)
    if rsid:
        return GenotypeCall(gene, _rsid_diplotype(gene, rsid.group(1), rsid.group(2), rsid.group(3)), reported=text)
    parts = [p for p in body.split("/")]
    if len(parts) == 2 and all(p.strip() for p in parts):
        a, b = (_allele(gene, p) for p in parts)
        return GenotypeCall(gene, canonical_diplotype(gene, a, b), reported=text)
    if len(parts) == 1 and parts[0].strip() and gene.startswith("HLA-"):
        return GenotypeCall(gene, None, carried=(_allele(gene, parts[0]),), reported=text)
    raise GenotypeError(f"{gene}: {text!r} is not a diplotype such as {gene}*1/*2")


def _rsid_diplotype(gene: str, rsid: str, first: str, second: str) -> str:
    """``rs9923231 C/T`` for a gene whose alleles are named by rsID (VKORC1: Reference, rs9923231)."""
    definition = gene_definition(gene)
    allele = next((a for a in definition.alleles if a.name.lower() == rsid.lower()), None)
    if allele is None or len(allele.core) != 1:
        raise GenotypeError(f"{gene}: {rsid} is not an allele of {gene} in the knowledge base")
    variant = next(iter(allele.core))
    names = []
    for base in (first.upper(), second.upper()):
        if base == variant.ref.upper():
            names.append(definition.reference_allele)
        elif base == variant.alt.upper():
            names.append(allele.name)
        else:
            raise GenotypeError(f"{gene}: {rsid} {base} is neither the reference ({variant.ref}) nor the "
                                f"variant ({variant.alt}) base of {definition.assembly}")
    return canonical_diplotype(gene, names[0], names[1])


def gene_result(call: GenotypeCall, phenotype: str | None, source: str) -> GeneResult:
    """The twin's ``outside_call`` result: phenotype derived by the knowledge base from the diplotype,
    else the reported phenotype; a carrier keeps its alleles in ``detected_alleles``."""
    if call.diplotype is not None or not call.carried:
        return outside_gene_result(OutsideCall(call.gene, call.diplotype, phenotype if call.diplotype is None else None,
                                               source))
    return GeneResult(
        status="outside_call", diplotypes=[], phenotype=NO_RULE, activity_score=None,
        alleles=[AlleleInfo(name=a, function=None, activity_value=None) for a in call.carried],
        detected_alleles=list(call.carried), missing_positions=[], unexpected_variants=[],
        notes=[f"outside call from {source}: {call.gene}{'/'.join(call.carried)} reported without a second allele "
               "(carrier)"],
    )


def phenotype_term(gene: str, text: str) -> str | None:
    """The knowledge base's phenotype for ``gene`` named by ``text`` (case-insensitive; the gene may
    lead the text; LOINC answer codes are read through the IG value set), else None."""
    value = text.strip()
    value = codes.IMPLICATION_ANSWERS.get(value, value)
    value = _strip_gene(gene, value)
    by_lower = {p.lower(): p for p in phenotype_names(gene)}
    return by_lower.get(value.lower())


def implication_terms(component: dict) -> list[str]:
    """The strings of a therapeutic-implication component's value (code, display, text)."""
    out = texts(component.get("valueCodeableConcept"))
    value = as_str(component.get("valueString"))
    return out + ([value] if value else [])
