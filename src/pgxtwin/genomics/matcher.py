"""Star-allele diplotype matching at a gene's defining positions.

Observed genotypes are turned into *allele states* per defining position (0 = genome reference
base, k = the k-th known change there, MISSING, UNEXPECTED) and compared with every allele's
expected states.  Missing positions match anything but are never assumed to be reference, so
the candidates list every diplotype that the data cannot rule out.

Ranking follows PharmCAT's Named Allele Matcher: an allele scores the number of positions its
definition specifies (the reference allele specifies all of them), counting only observed
positions; a diplotype scores the sum.  The top-scoring diplotypes are the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import combinations_with_replacement

import numpy as np

from ..knowledge.alleles import GeneDefinition, Position, gene_definition, trim_alleles
from .vcf import LocusRecord

MISSING = -1
UNEXPECTED = -2
RANKING_RULE = (
    "highest total definition score: each allele scores the number of defining positions its"
    " definition specifies (reference allele: all), counting observed positions only"
)


@dataclass(frozen=True)
class Observation:
    """Allele states of one sample at one gene's defining positions."""

    states: np.ndarray  # (positions, 2) int16
    phased: bool  # every heterozygous position is phased, all in one phase set
    unexpected: tuple[str, ...]  # e.g. "10:94781859 G>C (rs4244285)"
    blocks: np.ndarray | None = None  # (positions,) phase-set id of each phased position


@dataclass(frozen=True)
class Candidate:
    allele1: str
    allele2: str
    score: int


class GeneMatcher:
    """Precomputed expected states for one gene; cheap to call per sample."""

    def __init__(self, definition: GeneDefinition) -> None:
        self.definition = definition
        # one row per concrete form: an allele with optional changes (CPIC IUPAC codes) gets a
        # row with and a row without each of them, under the same name
        rows: list[tuple[str, frozenset, frozenset]] = []
        for allele in definition.alleles:
            if allele.structural:
                continue
            forms = [allele.core]
            for variant in allele.optional:
                forms = forms + [f | {variant} for f in forms]
            rows.extend((allele.name, form, allele.optional) for form in forms)
        full = {a.name for a in definition.alleles if a.fully_specified} | {definition.reference_allele}
        self.allele_names = [name for name, _, _ in rows]
        positions = definition.positions
        index = {p.pos: i for i, p in enumerate(positions)}
        expected = np.zeros((len(rows), len(positions)), dtype=np.int16)
        specified = np.zeros((len(rows), len(positions)), dtype=bool)
        for ai, (name, form, optional) in enumerate(rows):
            if name in full:
                specified[ai, :] = True
            for variant in form:
                pi = index[variant.pos]
                expected[ai, pi] = positions[pi].variants.index(variant) + 1
            for variant in form | optional:
                specified[ai, index[variant.pos]] = True
        self.expected = expected
        self.specified = specified
        # the reference allele's own states: a "change" is a difference from it (in GRCh37 the
        # DPYD reference allele itself differs from the genome at c.85, for example)
        self.reference_states = expected[self.allele_names.index(definition.reference_allele)]
        n = len(rows)
        pairs = np.array(list(combinations_with_replacement(range(n), 2)), dtype=np.int32).reshape(-1, 2)
        self.pairs = pairs
        self.lo = np.minimum(expected[pairs[:, 0]], expected[pairs[:, 1]])
        self.hi = np.maximum(expected[pairs[:, 0]], expected[pairs[:, 1]])
        self._signature: dict[bytes, np.ndarray] | None = None

    def _signatures(self) -> dict[bytes, np.ndarray]:
        # complete-data fast path: the sorted genotype at every position is a dictionary key
        if self._signature is None:
            table: dict[bytes, list[int]] = {}
            stacked = np.stack([self.lo, self.hi], axis=2)
            for k in range(len(self.pairs)):
                table.setdefault(stacked[k].tobytes(), []).append(k)
            self._signature = {key: np.array(v, dtype=np.int32) for key, v in table.items()}
        return self._signature

    def candidates(self, obs: Observation) -> list[Candidate]:
        """Every diplotype consistent with the observation, best score first."""
        states = obs.states
        missing = (states == MISSING).any(axis=1)
        if obs.phased:
            h1 = ((self.expected == states[:, 0]) | missing).all(axis=1)
            h2 = ((self.expected == states[:, 1]) | missing).all(axis=1)
            pair_idx = [(int(i), int(j)) for i in np.flatnonzero(h1) for j in np.flatnonzero(h2)]
        else:
            lo = np.minimum(states[:, 0], states[:, 1])
            hi = np.maximum(states[:, 0], states[:, 1])
            if not missing.any():
                key = np.stack([lo, hi], axis=1).astype(np.int16).tobytes()
                hits = self._signatures().get(key, np.empty(0, dtype=np.int32))
            else:
                ok = ((self.lo == lo) & (self.hi == hi)) | missing
                hits = np.flatnonzero(ok.all(axis=1))
            pair_idx = [(int(self.pairs[k, 0]), int(self.pairs[k, 1])) for k in hits]
        observed = ~missing
        scores = (self.specified & observed).sum(axis=1)
        order = self.definition.allele_order
        best: dict[tuple[str, str], int] = {}
        for i, j in pair_idx:
            a, b = sorted((self.allele_names[i], self.allele_names[j]), key=order.__getitem__)
            best[(a, b)] = max(best.get((a, b), -1), int(scores[i] + scores[j]))
        out = [Candidate(a, b, score) for (a, b), score in best.items()]
        out.sort(key=lambda c: (-c.score, order[c.allele1], order[c.allele2]))
        return out

    def matching_alleles(self, obs: Observation) -> list[str]:
        """Non-reference alleles whose every core change is present (for unphased allele lists)."""
        states = obs.states
        missing = (states == MISSING).any(axis=1)
        present = []
        for ai, name in enumerate(self.allele_names):
            if name == self.definition.reference_allele:
                continue
            core = self.expected[ai] > 0
            if not core.any():
                continue
            carried = (states[:, 0] == self.expected[ai]) | (states[:, 1] == self.expected[ai])
            if (carried | ~core).all() and not (core & missing).any():
                hom = ((states[:, 0] == self.expected[ai]) & (states[:, 1] == self.expected[ai])) | ~core
                present.extend([name, name] if hom.all() else [name])
        return present


@lru_cache(maxsize=None)
def matcher_for(gene: str, assembly: str) -> GeneMatcher:
    return GeneMatcher(gene_definition(gene, assembly))


def _state_lut(position: Position, record: LocusRecord) -> np.ndarray:
    """Allele index of the record -> allele state at ``position`` (index -1 -> MISSING)."""
    lut = np.full(len(record.alts) + 2, UNEXPECTED, dtype=np.int16)
    lut[-1] = MISSING  # index -1 wraps to the last slot
    lut[0] = 0
    keys = {v.key: k + 1 for k, v in enumerate(position.variants)}
    keys.update({syn.key: state for syn, state in position.synonyms})
    for i, alt in enumerate(record.alts, start=1):
        if alt in (".", "<NON_REF>", "<*>"):
            lut[i] = 0
            continue
        if alt == "*":  # spanning deletion: the position is not observed on that haplotype
            lut[i] = MISSING
            continue
        offset, ref, alt_t = trim_alleles(record.ref, alt)
        lut[i] = keys.get((record.pos + offset, ref, alt_t), UNEXPECTED)
    return lut


@dataclass(frozen=True)
class GeneObservations:
    """Allele states of every sample at one gene's defining positions (read once per file)."""

    definition: GeneDefinition
    states: np.ndarray  # (samples, positions, 2) int16
    phased: np.ndarray  # (samples, positions) bool: every record there was phased for the sample
    blocks: np.ndarray  # (samples, positions) int64 phase-set ids
    records: tuple[tuple[LocusRecord, ...], ...]  # per position

    @cached_property
    def _phase(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sample: usable phase, a single phase set, and the informative positions."""
        s = self.states
        known = (s[..., 0] != MISSING) & (s[..., 1] != MISSING)
        half = (s[..., 0] == MISSING) != (s[..., 1] == MISSING)
        informative = ((s[..., 0] != s[..., 1]) & known) | half  # positions where phase matters
        any_info = informative.any(axis=1)
        phased = any_info & np.where(informative, self.phased, True).all(axis=1)
        big = np.iinfo(np.int64).max
        low = np.where(informative, self.blocks, big).min(axis=1)
        high = np.where(informative, self.blocks, -big).max(axis=1)
        single = ~any_info | (low == high)
        return phased, single, informative

    def sample(self, index: int) -> Observation:
        phased, single, _ = self._phase
        states = self.states[index]
        unexpected: tuple[str, ...] = ()
        if (states == UNEXPECTED).any():
            unexpected = tuple(self._unexpected(index))
        return Observation(
            states=states,
            phased=bool(phased[index] and single[index]),
            unexpected=unexpected,
            blocks=self.blocks[index] if phased[index] and not single[index] else None,
        )

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Samples with identical observations: (first sample of each group, group of each sample).

        Samples carrying an unexpected allele form groups of their own (their notes differ).
        """
        phased, single, informative = self._phase
        n = len(self.states)
        key = np.concatenate(
            [
                self.states.reshape(n, -1).astype(np.int64),
                phased[:, None].astype(np.int64),
                single[:, None].astype(np.int64),
                np.where(informative & ~single[:, None], self.blocks, 0),
                np.where((self.states == UNEXPECTED).any(axis=(1, 2)), np.arange(n), -1)[:, None],
            ],
            axis=1,
        )
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        return first, inverse.reshape(-1)

    def _unexpected(self, index: int) -> list[str]:
        out = []
        for pi in np.flatnonzero((self.states[index] == UNEXPECTED).any(axis=1)):
            position = self.definition.positions[pi]
            for rec in self.records[pi]:
                lut = _state_lut(position, rec)
                idx = rec.alleles_idx[index]
                alts = sorted({rec.allele(int(i)) for i in idx if lut[i] == UNEXPECTED})
                if alts:
                    out.append(
                        f"{rec.chrom}:{rec.pos} {rec.ref}>{','.join(alts)}"
                        + (f" ({position.rsid})" if position.rsid else "")
                    )
        return out


def observe_all(
    definition: GeneDefinition, records: dict[tuple[str, int], list[LocusRecord]], n_samples: int
) -> GeneObservations:
    """Allele states of all samples at every defining position of ``definition``."""
    positions = definition.positions
    states = np.full((n_samples, len(positions), 2), MISSING, dtype=np.int16)
    phased = np.ones((n_samples, len(positions)), dtype=bool)
    blocks = np.zeros((n_samples, len(positions)), dtype=np.int64)
    per_position: list[tuple[LocusRecord, ...]] = []
    for pi, position in enumerate(positions):
        recs = tuple(r for locus in position.loci for r in records.get((position.chrom, locus), ()))
        per_position.append(recs)
        if not recs:
            continue
        per_record = [_state_lut(position, r)[r.alleles_idx] for r in recs]  # each (samples, 2)
        if len(per_record) == 1:
            states[:, pi] = per_record[0]
        else:
            # split multi-allelic / synonym records: collect each sample's non-reference alleles
            for si in range(n_samples):
                alleles = [int(a) for p in per_record for a in p[si]]
                if MISSING in alleles:
                    continue
                nonref = [a for a in alleles if a != 0]
                if len(nonref) > 2:
                    nonref = [UNEXPECTED, UNEXPECTED]
                states[si, pi] = (nonref + [0, 0])[:2]
        phased[:, pi] = np.logical_and.reduce([r.phased for r in recs])
        blocks[:, pi] = recs[0].phase_set
    # a half call (e.g. "1|.") is kept: phased callers can still use the known haplotype;
    # everywhere else the position counts as missing
    return GeneObservations(definition, states, phased, blocks, tuple(per_position))


def observe(
    definition: GeneDefinition, records: dict[tuple[str, int], list[LocusRecord]], sample_index: int
) -> Observation:
    """Allele states of one sample (see :func:`observe_all`)."""
    n_samples = next((len(r.phased) for recs in records.values() for r in recs), sample_index + 1)
    return observe_all(definition, records, n_samples).sample(sample_index)


def cover(
    matcher: GeneMatcher, states: np.ndarray, copies: np.ndarray, missing: np.ndarray, max_alleles: int = 6
) -> tuple[list[str], np.ndarray]:
    """Explain observed changes by a multiset of defined alleles (DPYD combinations).

    ``states[p]`` is the observed state at each position, ``copies[p]`` how many copies of a
    change from the reference allele's state there (1 on a haplotype; 1 or 2 unphased).  Returns the alleles that
    explain the most copies with the fewest alleles, and the copies left unexplained.
    Missing positions are dropped from the definitions (an allele defined only there is out).
    """
    reference = matcher.definition.reference_allele
    candidates: list[tuple[str, np.ndarray]] = []
    hidden: dict[str, int] = {}  # defining positions of the allele that were not observed
    seen_names: set[str] = set()
    for ai, name in enumerate(matcher.allele_names):
        own = matcher.expected[ai] != matcher.reference_states
        core = own & ~missing
        if name == reference or name in seen_names or not core.any():
            continue
        if (matcher.expected[ai][core] == states[core]).all() and (copies[core] > 0).all():
            candidates.append((name, core))
            hidden[name] = int((own & missing).sum())
            seen_names.add(name)
    # larger definitions first so that e.g. HapB3 beats its intronic part alone
    candidates.sort(key=lambda c: -int(c[1].sum()))
    # most copies explained, then fewest alleles, then fewest unobserved definition positions
    best: tuple[tuple[int, int, int], list[str]] = ((0, 0, 0), [])

    def search(start: int, remaining: np.ndarray, chosen: list[str], covered: int) -> None:
        nonlocal best
        key = (covered, -len(chosen), -sum(hidden[n] for n in chosen))
        if key > best[0]:
            best = (key, list(chosen))
        if len(chosen) >= max_alleles:
            return
        for k in range(start, len(candidates)):
            name, core = candidates[k]
            if (remaining[core] > 0).all():
                remaining[core] -= 1
                chosen.append(name)
                search(k, remaining, chosen, covered + int(core.sum()))
                chosen.pop()
                remaining[core] += 1

    remaining = copies.astype(np.int16).copy()
    search(0, remaining, [], 0)
    left = copies.astype(np.int16).copy()
    for name in best[1]:
        left[dict(candidates)[name]] -= 1
    return best[1], left
