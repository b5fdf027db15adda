"""VCF -> per-gene diplotypes and phenotypes for each sample (the ``pgxtwin call`` pipeline).

Stages, as in the folders: read genotypes at the defining loci (``vcf``), match star alleles
(``matcher``), apply the knowledge base's phenotype rule (``knowledge.phenotypes``), then merge
outside calls (``outside_calls``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike

import re

import numpy as np

from ..errors import PgxInputError
from ..knowledge.alleles import GeneDefinition, callable_genes, gene_definition
from ..knowledge.phenotypes import INDETERMINATE, PhenotypeCall, phenotype_from_score, phenotype_of, rs4149056_fallback
from ..knowledge.version import knowledge_base_version
from .matcher import MISSING, RANKING_RULE, UNEXPECTED, Candidate, Observation, cover, matcher_for, observe_all
from .outside_calls import OutsideCall, merge_outside_calls
from .result import AlleleInfo, CallResult, GeneResult, KnowledgeBaseVersion
from .vcf import LocusRecord, VcfFile

# PharmCAT convention: in these genes an undocumented allele at a defining position is read as
# reference (the remaining definitions still inform the call); elsewhere the gene is not called.
READ_UNEXPECTED_AS_REFERENCE = frozenset({"DPYD", "TPMT", "NUDT15", "CACNA1S", "RYR1", "G6PD"})
# PharmCAT convention for DPYD: a haplotype may carry several defined alleles (named as a
# combination); unphased data gives the list of detected alleles.
COMBINATION_GENES = frozenset({"DPYD"})
MAX_LISTED = 50  # diplotypes listed for a partial call; the rest are counted in a note


def _diplotype(definition: GeneDefinition, a: str, b: str) -> str:
    order = definition.allele_order
    first, second = sorted((a, b), key=order.__getitem__)
    return f"{first}/{second}"


def _allele_info(definition: GeneDefinition, names: Sequence[str]) -> list[AlleleInfo]:
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    out = []
    for name in seen:
        allele = definition.allele(name)
        out.append(AlleleInfo(name=name, function=allele.function, activity_value=allele.activity_value))
    return out


def _shared_phenotype(calls: Sequence[PhenotypeCall]) -> PhenotypeCall:
    """The phenotype all possibilities share, else Indeterminate (safety rule)."""
    phenotypes = {c.phenotype for c in calls}
    scores = {c.activity_score for c in calls}
    if len(phenotypes) == 1:
        return PhenotypeCall(phenotypes.pop(), scores.pop() if len(scores) == 1 else None)
    return PhenotypeCall(INDETERMINATE, None)


def _no_call(definition: GeneDefinition, reason: str, base: dict) -> GeneResult:
    return GeneResult(
        status="no_call", diplotypes=[], phenotype=INDETERMINATE, activity_score=None, alleles=[],
        notes=[*base["notes"], reason], missing_positions=base["missing_positions"],
        unexpected_variants=base["unexpected_variants"],
    )


def _fallback_slco1b1(definition: GeneDefinition, obs: Observation, reason: str, base: dict) -> GeneResult:
    # CPIC statin guideline (Cooper-DeHoff 2022, PMID 35152405): with no star-allele call the
    # rs4149056 (c.521T>C) genotype alone assigns SLCO1B1 function.
    index = next((i for i, p in enumerate(definition.positions) if p.rsid == "rs4149056"), None)
    if index is None or (obs.states[index] < 0).any():
        return _no_call(definition, reason, base)
    position = definition.positions[index]
    bases = [position.ref if s == 0 else position.variants[s - 1].alt for s in sorted(obs.states[index])]
    fallback = rs4149056_fallback(int((obs.states[index] > 0).sum()))
    return GeneResult(
        status="no_call", diplotypes=[f"rs4149056{bases[0]}/rs4149056{bases[1]}"],
        phenotype=fallback.phenotype, activity_score=None, alleles=[],
        notes=[*base["notes"], reason, "star alleles not callable: phenotype from the rs4149056 genotype (CPIC)"],
        missing_positions=base["missing_positions"], unexpected_variants=base["unexpected_variants"],
    )


def _cdna_order(definition: GeneDefinition, name: str) -> tuple[int, int]:
    match = re.search(r"c\.(-?\d+)", name)
    return (int(match.group(1)) if match else 10**9, definition.allele_order[name])


def _combination_name(definition: GeneDefinition, names: Sequence[str]) -> str:
    """PharmCAT's naming of several alleles on one haplotype: ``[A + B]`` in cDNA order."""
    if not names:
        return definition.reference_allele
    if len(names) == 1:
        return names[0]
    return "[" + " + ".join(sorted(names, key=lambda n: _cdna_order(definition, n))) + "]"


def _lowest_function(definition: GeneDefinition, names: Sequence[str]) -> float | None:
    """Activity of a haplotype carrying ``names``: its lowest-function allele (CPIC DPYD)."""
    values = [definition.allele(n).activity_value for n in names] or [definition.allele(definition.reference_allele).activity_value]
    return None if any(v is None for v in values) else min(values)  # type: ignore[type-var]


def _block_arrangements(states: np.ndarray, blocks: np.ndarray | None, het: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Haplotype pairs for phased data: each phase set after the first may be flipped."""
    if blocks is None:
        return [(states[:, 0], states[:, 1])]
    ids = sorted(set(blocks[het].tolist()))
    out = []
    for mask in range(1 << (len(ids) - 1)):
        flip = np.zeros(len(states), dtype=bool)
        for k, block in enumerate(ids[1:]):
            if mask >> k & 1:
                flip |= blocks == block
        h1 = np.where(flip, states[:, 1], states[:, 0])
        h2 = np.where(flip, states[:, 0], states[:, 1])
        out.append((h1, h2))
    return out


def _hidden_floor(definition: GeneDefinition, states: np.ndarray, missing: np.ndarray) -> float | None:
    """Lowest activity value among alleles the missing positions could hide (None: none could).

    An allele could hide when some of its defining changes sit at missing positions and its
    observed defining positions all show its change on at least one haplotype.
    """
    matcher = matcher_for(definition.name, definition.assembly)
    floor: float | None = None
    for ai, name in enumerate(matcher.allele_names):
        own = matcher.expected[ai] != matcher.reference_states
        if not (own & missing).any():
            continue
        seen = own & ~missing
        carried = (states[:, 0] == matcher.expected[ai]) | (states[:, 1] == matcher.expected[ai])
        if not carried[seen].all():
            continue
        value = definition.allele(name).activity_value
        if value is not None and (floor is None or value < floor):
            floor = value
    return floor


def _combinations(definition: GeneDefinition, obs: Observation, missing: np.ndarray, base: dict) -> GeneResult:
    """DPYD: each haplotype is explained by a combination of alleles (PharmCAT convention).

    Phased data (or unphased data with at most one heterozygous position) gives a diplotype of
    allele combinations; other unphased data gives the list of detected alleles, and the two
    lowest-function alleles set the activity score.  Changes that no definition explains are
    read as reference (with a note), as PharmCAT does for DPYD.
    """
    matcher = matcher_for(definition.name, definition.assembly)
    states = obs.states
    het = (states[:, 0] != states[:, 1]) & ~missing
    notes = list(base["notes"])
    ref = definition.reference_allele
    if obs.phased or obs.blocks is not None or het.sum() <= 1:
        phased_input = obs.phased or obs.blocks is not None
        if phased_input:
            arrangements = _block_arrangements(states, obs.blocks, het)
        else:
            # at most one heterozygous position: put its change on the first haplotype
            ref_states = matcher.reference_states[:, None]
            known = np.where(missing[:, None], ref_states, states)
            first_changed = known[:, 0] != matcher.reference_states
            arrangements = [(np.where(first_changed, known[:, 0], known[:, 1]), np.where(first_changed, known[:, 1], known[:, 0]))]
        options: dict[str, tuple[PhenotypeCall, list[str]]] = {}
        hap_values: list[list[float | None]] = []
        for haplotypes in arrangements:
            explained = []
            for hap in haplotypes:
                hap_missing = hap == MISSING if phased_input else missing
                hap = np.where(hap_missing, matcher.reference_states, hap)
                changed = (hap != matcher.reference_states).astype(np.int16)
                names, left = cover(matcher, hap, changed, hap_missing)
                if (left > 0).any():
                    note = "changes not part of any defined allele read as reference: " + ", ".join(
                        definition.positions[i].label for i in np.flatnonzero(left > 0))
                    if note not in notes:
                        notes.append(note)
                explained.append(names)
            labels = sorted((_combination_name(definition, n) for n in explained), key=lambda n: (n != ref, n))
            values = [_lowest_function(definition, n) for n in explained]
            score = None if any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]
            phen = PhenotypeCall(phenotype_from_score(definition.name, score), score) if score is not None else PhenotypeCall(INDETERMINATE, None)
            options.setdefault("/".join(labels), (phen, [n for names in explained for n in names] or [ref]))
            hap_values.append(values)
        diplotypes, detected = list(options), []
        call = _shared_phenotype([p for p, _ in options.values()])
        lowest = [n for _, names in options.values() for n in names]
        if len(options) > 1:
            notes.append(f"{len(arrangements)} arrangements of unlinked phase sets; {len(options)} distinct diplotypes")
    else:
        ref_states = matcher.reference_states[:, None]
        known = np.where(missing[:, None], ref_states, states)
        changed = known != ref_states
        variant_state = np.where(changed[:, 0], known[:, 0], known[:, 1])
        copies = changed.sum(axis=1)
        names, left = cover(matcher, variant_state, copies, missing)
        if (left > 0).any():
            notes.append("changes not part of any defined allele read as reference: " + ", ".join(
                definition.positions[i].label for i in np.flatnonzero(left > 0)))
        ordered = sorted(names, key=lambda n: (definition.allele(n).activity_value or 0.0, _cdna_order(definition, n)))
        lowest = (ordered + [ref, ref])[:2]
        call = phenotype_of(definition.name, lowest[0], lowest[1], definition.assembly)
        hap_values = [[definition.allele(n).activity_value for n in lowest]]
        detected = sorted(set(names), key=lambda n: _cdna_order(definition, n))
        if len(names) == 1:
            detected = [ref, *detected]
        diplotypes = []
        notes.append(f"unphased: activity score from the two lowest-function alleles {lowest[0]} and {lowest[1]}")
    status = "ambiguous" if len(diplotypes) > 1 else "called"
    if missing.any():
        status = "partial"
        floor = _hidden_floor(definition, obs.states, missing)
        if floor is not None and call.phenotype != INDETERMINATE:
            # worst case: an allele defined at a missing position on either haplotype
            worst_scores = {
                sum(min(v, floor) for v in values)  # type: ignore[type-var]
                for values in hap_values
                if all(v is not None for v in values)
            }
            worst = {phenotype_from_score(definition.name, score) for score in worst_scores}
            if worst != {call.phenotype}:
                notes.append("missing positions could hide a lower-function allele")
                call = PhenotypeCall(INDETERMINATE, None)
            elif worst_scores != {call.activity_score}:
                notes.append("missing positions leave the activity score uncertain; the phenotype holds")
                call = PhenotypeCall(call.phenotype, None)
    return GeneResult(
        status=status, diplotypes=diplotypes, scores=[0] * len(diplotypes), detected_alleles=detected,
        phenotype=call.phenotype, activity_score=call.activity_score, alleles=_allele_info(definition, lowest),
        notes=notes, missing_positions=base["missing_positions"], unexpected_variants=base["unexpected_variants"],
    )


def call_gene(definition: GeneDefinition, obs: Observation) -> GeneResult:
    """Diplotype(s) and phenotype of one gene from one sample's observation."""
    gene, assembly = definition.name, definition.assembly
    missing = (obs.states == MISSING).any(axis=1)
    notes: list[str] = []
    if definition.structural_alleles:
        notes.append(
            "structural alleles not assessed from SNV/indel data: " + ", ".join(definition.structural_alleles)
        )
    base = {
        "notes": notes,
        "missing_positions": [p.label for p, m in zip(definition.positions, missing) if m],
        "unexpected_variants": list(obs.unexpected),
    }
    if missing.all():
        return _no_call(definition, "no defining position of the gene was observed", base)
    if (obs.states == UNEXPECTED).any():
        if gene in READ_UNEXPECTED_AS_REFERENCE:
            states = obs.states.copy()
            states[states == UNEXPECTED] = 0
            obs = Observation(states=states, phased=obs.phased, unexpected=obs.unexpected)
            notes.append("unexpected alleles at defining positions read as reference (PharmCAT convention)")
        elif gene == "SLCO1B1":
            return _fallback_slco1b1(definition, obs, "unexpected allele at a defining position", base)
        else:
            return _no_call(definition, "unexpected allele at a defining position: gene not called", base)

    if gene in COMBINATION_GENES:
        return _combinations(definition, obs, missing, base)

    candidates = matcher_for(gene, assembly).candidates(obs)
    if not candidates:
        reason = "the observed genotypes match no pair of defined alleles"
        if gene == "SLCO1B1":
            return _fallback_slco1b1(definition, obs, reason, base)
        return _no_call(definition, reason, base)
    top = [c for c in candidates if c.score == candidates[0].score]
    if missing.any() and len(candidates) > 1:
        status = "partial"
        pool: list[Candidate] = candidates
        notes.append(f"{len(candidates)} diplotypes cannot be ruled out because of missing positions")
    elif len(top) > 1:
        status, pool = "ambiguous", top
    else:
        status, pool = "called", top
    phenotype = _shared_phenotype([phenotype_of(gene, c.allele1, c.allele2, assembly) for c in pool])
    listed = candidates[:MAX_LISTED]
    if len(candidates) > MAX_LISTED:
        notes.append(f"only the {MAX_LISTED} best of {len(candidates)} candidate diplotypes are listed")
    return GeneResult(
        status=status,
        diplotypes=[_diplotype(definition, c.allele1, c.allele2) for c in listed],
        scores=[c.score for c in listed],
        ranking_rule=RANKING_RULE if len(candidates) > 1 else None,
        phenotype=phenotype.phenotype,
        activity_score=phenotype.activity_score,
        alleles=_allele_info(definition, [n for c in top for n in (c.allele1, c.allele2)]),
        notes=notes,
        missing_positions=base["missing_positions"],
        unexpected_variants=base["unexpected_variants"],
    )


def call_vcf(
    path: str | PathLike[str],
    *,
    assembly: str = "GRCh38",
    sample: str | None = None,
    genes: Sequence[str] | None = None,
    outside_calls: Sequence[OutsideCall] = (),
) -> Iterator[CallResult]:
    """Call every (or the given) gene for each sample in the VCF (one result per sample)."""
    selected = list(genes) if genes else list(callable_genes())
    unknown = [g for g in selected if g not in callable_genes()]
    if unknown:
        raise PgxInputError(f"genes not callable from a VCF: {', '.join(unknown)}")
    vcf = VcfFile(path, assembly)
    try:
        definitions = [gene_definition(g, assembly) for g in selected]
        loci = {(p.chrom, locus) for d in definitions for p in d.positions for locus in p.loci}
        records = vcf.read_loci(loci)
        _check_reference_bases(vcf, definitions, records)
        _check_other_assembly_loci(vcf, selected, len(loci), len(records))
        indices = [vcf.sample_index(sample)] if sample is not None else range(len(vcf.samples))
        kb = KnowledgeBaseVersion(**knowledge_base_version())
        # samples with the same genotypes at a gene share its result (most samples, in cohorts)
        per_gene = []
        for definition in definitions:
            batch = observe_all(definition, records, len(vcf.samples))
            first, group = batch.groups()
            results = {}
            per_gene.append((definition.name, batch, first, group, results))
        for index in indices:
            genes_out = {}
            for name, batch, first, group, results in per_gene:
                g = int(group[index])
                if g not in results:
                    results[g] = call_gene(batch.definition, batch.sample(int(first[g])))
                genes_out[name] = results[g]
            merge_outside_calls(genes_out, outside_calls, assembly)
            yield CallResult(
                source=str(path), sample=vcf.samples[index], assembly=assembly, knowledge_base=kb, genes=genes_out
            )
    finally:
        vcf.close()


def _check_other_assembly_loci(vcf: VcfFile, genes: Sequence[str], wanted: int, found: int) -> None:
    """Few records at our loci may mean the file is of the other assembly: look there too."""
    if wanted < 20 or found >= 0.2 * wanted:
        return
    other = "GRCh37" if vcf.assembly == "GRCh38" else "GRCh38"
    other_loci = {(p.chrom, locus) for g in genes for p in gene_definition(g, other).positions for locus in p.loci}
    found_other = len(vcf.read_loci(other_loci))
    if found_other >= 5 and found_other > 2 * found:
        raise PgxInputError(
            f"only {found} of {wanted} {vcf.assembly} defining positions have records but {found_other}"
            f" {other} positions do: the file looks like {other} (use --assembly {other})",
            source=str(vcf.path),
        )


def _check_reference_bases(
    vcf: VcfFile, definitions: Sequence[GeneDefinition], records: dict[tuple[str, int], list[LocusRecord]]
) -> None:
    """Detect a VCF of the other assembly from the REF bases at our defining positions."""
    checked = mismatched = 0
    for definition in definitions:
        for position in definition.positions:
            for rec in records.get((position.chrom, position.pos), ()):
                checked += 1
                if not (rec.ref.startswith(position.ref[0]) or position.ref.startswith(rec.ref[0])):
                    mismatched += 1
    if checked >= 5 and mismatched / checked > 0.5:
        other = "GRCh37" if vcf.assembly == "GRCh38" else "GRCh38"
        raise PgxInputError(
            f"reference bases at {mismatched} of {checked} defining positions disagree with {vcf.assembly};"
            f" the file looks like {other} (use --assembly {other})",
            source=str(vcf.path),
        )
