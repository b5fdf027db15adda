"""Read genotypes at allele-defining positions from a VCF (plain or bgzipped, indexed or not).

cyvcf2 (htslib) does the parsing.  With a tabix/CSI index only the defining loci are queried,
so a whole-genome VCF costs little more than a panel VCF; without one the file is scanned once.
Nothing here knows star alleles: the output is, per locus, the record's alleles and a
(samples x 2) array of allele indices (-1 = no-call) with a phase flag per sample.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cyvcf2 import VCF
from cyvcf2.cyvcf2 import set_htslib_log_level

from ..errors import PgxInputError

# Chromosome lengths that differ between the assemblies (UCSC / GRC).
_CONTIG_LENGTHS = {
    "GRCh38": {"1": 248956422, "2": 242193529, "10": 133797422, "7": 159345973, "X": 156040895},
    "GRCh37": {"1": 249250621, "2": 243199373, "10": 135534747, "7": 159138663, "X": 155270560},
}
# htslib's own warnings (undeclared INFO tags, missing index) are noise for our users; real
# problems surface as exceptions and are reported as one-line errors.
set_htslib_log_level(0)  # HTS_LOG_OFF
_CONTIG_LINE = re.compile(r"^##contig=<ID=([^,>]+),.*?length=(\d+)", re.MULTILINE)
_GZIP_MAGIC = b"\x1f\x8b"
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


@dataclass(frozen=True)
class LocusRecord:
    """One VCF record at a locus of interest."""

    chrom: str
    pos: int
    ref: str
    alts: tuple[str, ...]
    alleles_idx: np.ndarray  # (samples, 2) int16; -1 = missing allele
    phased: np.ndarray  # (samples,) bool
    phase_set: np.ndarray  # (samples,) int64; PS block id, 0 when phased without PS
    line_hint: str

    def allele(self, index: int) -> str:
        return self.ref if index == 0 else self.alts[index - 1]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _check_gzip(path: Path) -> None:
    if not _is_gzip(path):
        return
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - len(_BGZF_EOF)))
        tail = handle.read()
    if tail == _BGZF_EOF:
        return
    # Plain gzip (not BGZF) has no EOF block: read it through to find truncation.
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise PgxInputError(f"truncated or corrupt gzip file ({exc})", source=str(path)) from None
    # a BGZF file without its EOF block is truncated even if the last block happens to inflate
    with open(path, "rb") as handle:
        if handle.read(16)[12:14] == b"BC":
            raise PgxInputError("truncated bgzip file (no BGZF end-of-file block)", source=str(path))


def _check_text_vcf(path: Path) -> None:
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:  # type: ignore[operator]
            first = handle.readline()
    except (OSError, EOFError) as exc:
        raise PgxInputError(f"cannot read file ({exc})", source=str(path)) from None
    if not first.startswith("##fileformat=VCF"):
        raise PgxInputError("not a VCF file (first line is not '##fileformat=VCF...')", source=str(path), line=1)


def _line_after(path: Path, last: str) -> int | None:
    """1-based line number of the record following ``last`` ("chrom:pos"), for error messages."""
    opener = gzip.open if _is_gzip(path) else open
    target = None if ":" not in last else tuple(last.rsplit(":", 1))
    seen_header = seen_last = False
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:  # type: ignore[operator]
            for number, line in enumerate(handle, start=1):
                if line.startswith("#"):
                    seen_header = True
                    continue
                if not seen_header:
                    continue
                if target is None or seen_last:
                    return number
                fields = line.split("\t", 2)
                seen_last = len(fields) > 1 and (fields[0], fields[1]) == target
    except (OSError, EOFError, zlib.error):
        return None
    return None


def normalise_chrom(name: str) -> str:
    """``chr10`` -> ``10``; ``chrM``/``MT`` -> ``M`` (the knowledge base's names)."""
    name = name.removeprefix("chr")
    return "M" if name == "MT" else name


class VcfFile:
    """A VCF opened for reading genotypes at given loci."""

    def __init__(self, path: str | os.PathLike[str], assembly: str = "GRCh38") -> None:
        self.path = Path(path)
        self.assembly = assembly
        if not self.path.is_file():
            raise PgxInputError("no such file", source=str(self.path))
        _check_gzip(self.path)
        _check_text_vcf(self.path)
        try:
            self._vcf = VCF(str(self.path), lazy=True, threads=1)
        except Exception as exc:  # cyvcf2 raises bare Exception for a malformed header
            raise PgxInputError(f"not a readable VCF ({exc})", source=str(self.path)) from None
        self.samples: list[str] = list(self._vcf.samples)
        if not self.samples:
            raise PgxInputError("VCF has no sample columns (no genotypes to call)", source=str(self.path))
        self.indexed = any(Path(str(self.path) + ext).is_file() for ext in (".tbi", ".csi"))
        self._contig_lengths = self._header_contigs()
        self.chr_prefix = self._detect_prefix()
        self._check_assembly_by_contigs()

    def _header_contigs(self) -> dict[str, int]:
        # cyvcf2's header records drop the contig length: read it from the raw header
        return {m.group(1): int(m.group(2)) for m in _CONTIG_LINE.finditer(self._vcf.raw_header)}

    def _detect_prefix(self) -> bool:
        names = list(self._contig_lengths) or list(self._vcf.seqnames or [])
        if names:
            return any(n.startswith("chr") for n in names)
        # no header contigs: peek at the first record
        probe = VCF(str(self.path), lazy=True)
        try:
            first = next(iter(probe), None)
        finally:
            probe.close()
        return bool(first is not None and first.CHROM.startswith("chr"))

    def _check_assembly_by_contigs(self) -> None:
        other = "GRCh37" if self.assembly == "GRCh38" else "GRCh38"
        votes = {self.assembly: 0, other: 0}
        for name, length in self._contig_lengths.items():
            key = name.removeprefix("chr")
            for asm in votes:
                if _CONTIG_LENGTHS[asm].get(key) == length:
                    votes[asm] += 1
        if votes[other] > votes[self.assembly]:
            raise PgxInputError(
                f"the file looks like {other} (contig lengths in the header), but {self.assembly} was asked"
                f" for (use --assembly {other})",
                source=str(self.path),
            )

    def contig(self, chrom: str) -> str:
        """The file's name for a knowledge-base chromosome (``10``, ``X``, ``M``)."""
        names = [f"chr{chrom}", chrom] if self.chr_prefix else [chrom, f"chr{chrom}"]
        if chrom == "M":
            names += ["chrMT", "MT"] if self.chr_prefix else ["MT", "chrMT"]
        known = set(self._contig_lengths) | set(self._vcf.seqnames or [])
        return next((n for n in names if n in known), names[0])

    def sample_index(self, sample: str) -> int:
        try:
            return self.samples.index(sample)
        except ValueError:
            raise PgxInputError(
                f"sample {sample!r} is not in the file (samples: {', '.join(self.samples[:10])}"
                + (" ..." if len(self.samples) > 10 else "")
                + ")",
                source=str(self.path),
            ) from None

    def read_loci(self, loci: Iterable[tuple[str, int]]) -> dict[tuple[str, int], list[LocusRecord]]:
        """Records at the given (chromosome without 'chr', 1-based position) loci."""
        wanted: dict[str, set[int]] = {}
        for chrom, pos in loci:
            wanted.setdefault(chrom, set()).add(pos)
        found: dict[tuple[str, int], list[LocusRecord]] = {}
        for variant in self._iter_candidates(wanted):
            chrom = normalise_chrom(variant.CHROM)
            pos = variant.POS
            if pos not in wanted.get(chrom, ()):
                continue
            found.setdefault((chrom, pos), []).append(self._record(variant, chrom))
        return found

    def _iter_candidates(self, wanted: dict[str, set[int]]) -> Iterator[object]:
        last = "the first record"
        try:
            if self.indexed:
                for chrom, positions in wanted.items():
                    ordered = sorted(positions)
                    # one query per cluster of nearby loci keeps whole-genome files cheap
                    start = prev = ordered[0]
                    for pos in ordered[1:] + [None]:  # type: ignore[list-item]
                        if pos is not None and pos - prev < 50_000:
                            prev = pos
                            continue
                        with warnings.catch_warnings():
                            # cyvcf2 warns for a region without records: an empty region is normal
                            warnings.simplefilter("ignore", UserWarning)
                            region = list(self._vcf(f"{self.contig(chrom)}:{start}-{prev}"))
                        for variant in region:
                            last = f"{variant.CHROM}:{variant.POS}"
                            yield variant
                        if pos is not None:
                            start = prev = pos
            else:
                # a cyvcf2 reader iterates once: scan a fresh one each time
                scan = VCF(str(self.path), lazy=True, threads=1)
                try:
                    for variant in scan:
                        last = f"{variant.CHROM}:{variant.POS}"
                        yield variant
                finally:
                    scan.close()
        except PgxInputError:
            raise
        except Exception as exc:  # htslib parse errors surface as bare Exception
            raise PgxInputError(
                f"malformed VCF record after {last}: a field (e.g. GT) could not be parsed ({exc})",
                source=str(self.path),
                line=_line_after(self.path, last),
            ) from None

    def _record(self, variant: object, chrom: str) -> LocusRecord:
        v = variant  # cyvcf2.Variant
        gt = v.genotype  # type: ignore[attr-defined]
        if gt is None:
            raise PgxInputError(
                f"record {v.CHROM}:{v.POS} has no GT field", source=str(self.path)  # type: ignore[attr-defined]
            )
        arr = gt.array()  # (samples, ploidy+1): allele indices, last column = phased
        n_alleles = 1 + len(v.ALT)  # type: ignore[attr-defined]
        alleles = np.full((arr.shape[0], 2), -1, dtype=np.int16)
        ploidy = arr.shape[1] - 1
        if ploidy > 2 and (arr[:, 2:-1] != -2).any():
            raise PgxInputError(
                f"malformed genotype at {v.CHROM}:{v.POS}: more than two alleles per sample",  # type: ignore[attr-defined]
                source=str(self.path),
            )
        sex_linked = chrom in ("X", "Y", "M")
        alleles[:, 0] = arr[:, 0]
        if ploidy >= 2:
            alleles[:, 1] = arr[:, 1]
            haploid = arr[:, 1] == -2  # htslib vector end: a haploid call
        else:
            haploid = np.ones(arr.shape[0], dtype=bool)
        # hemizygous (chrX/Y in males, chrM): one copy stands for both; elsewhere it is no call
        alleles[haploid, 1] = arr[haploid, 0] if sex_linked else -1
        if not sex_linked:
            alleles[haploid, 0] = -1
        alleles[alleles < -1] = -1
        if (alleles >= n_alleles).any():
            raise PgxInputError(
                f"malformed genotype at {v.CHROM}:{v.POS}: allele index beyond the {n_alleles} alleles of the record",  # type: ignore[attr-defined]
                source=str(self.path),
            )
        phased = arr[:, -1].astype(bool) if ploidy >= 2 else np.ones(arr.shape[0], dtype=bool)
        phase_set = np.zeros(arr.shape[0], dtype=np.int64)
        try:
            ps = v.format("PS")  # type: ignore[attr-defined]
        except KeyError:
            ps = None
        if ps is not None:
            values = np.asarray(ps).reshape(arr.shape[0], -1)[:, 0].astype(np.int64)
            phase_set = np.where(values > 0, values, 0)
        return LocusRecord(
            chrom=chrom,
            pos=v.POS,  # type: ignore[attr-defined]
            ref=v.REF,  # type: ignore[attr-defined]
            alts=tuple(a for a in v.ALT),  # type: ignore[attr-defined]
            alleles_idx=alleles,
            phased=phased,
            phase_set=phase_set,
            line_hint=f"{v.CHROM}:{v.POS}",  # type: ignore[attr-defined]
        )

    def close(self) -> None:
        self._vcf.close()
