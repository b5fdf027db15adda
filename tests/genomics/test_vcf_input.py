"""VCF input handling of ``call_vcf``: file flavours, samples, example genotypes, missing data,
bad input (``PgxInputError`` naming the file) and outside calls.

Files are written by ``vcfgen`` from star-allele pairs (a record at every defining position).
"""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest

from pgxtwin.errors import PgxInputError
from pgxtwin.genomics.caller import call_vcf
from pgxtwin.genomics.outside_calls import read_outside_calls
from pgxtwin.knowledge.alleles import gene_definition
from pgxtwin.knowledge.phenotypes import INDETERMINATE, phenotype_of

from . import vcfgen
from .conftest import call_one

EXAMPLE = {
    "CYP2C19": ("*2", "*17"),
    "CYP2C9": ("*1", "*3"),
    "TPMT": ("*1", "*3A"),
    "SLCO1B1": ("*1", "*5"),
    "UGT1A1": ("*1", "*28"),
    "DPYD": ("Reference", "c.1905+1G>A (*2A)"),
    "NUDT15": ("*1", "*3"),
    "CYP3A5": ("*1", "*3"),
}
GENES = sorted(EXAMPLE)


def _position(gene: str, rsid: str):
    return next(p for p in gene_definition(gene).positions if p.rsid == rsid)


def _only(genes) -> dict:
    return {g: EXAMPLE[g] for g in genes}


def _comparable(results) -> list[dict]:
    return [r.model_dump(exclude={"source"}) for r in results]


@pytest.fixture(scope="module")
def population(vcf_dir: Path):
    """Plain and bgzipped copies of the same 25-sample file over every callable gene."""
    paths = {}
    for label, kwargs in {
        "plain": {},
        "bgzip": {"bgzip": True},
        "nochr": {"chr_prefix": False},
        "nochr_bgzip": {"chr_prefix": False, "bgzip": True},
    }.items():
        path, _ = vcfgen.write_population_vcf(vcf_dir / f"pop_{label}.vcf", 25, seed=7, ref_weight=0.5, **kwargs)
        paths[label] = path
    return paths


# --- file flavours ------------------------------------------------------------------------------


def test_plain_and_bgzipped_tabix_inputs_give_the_same_results(population):
    assert Path(str(population["bgzip"]) + ".tbi").is_file()
    plain = _comparable(call_vcf(population["plain"]))
    assert len(plain) == 25
    assert plain == _comparable(call_vcf(population["bgzip"]))


def test_bgzipped_without_index_gives_the_same_results(population, vcf_dir: Path):
    unindexed = vcf_dir / "pop_noindex.vcf.gz"
    unindexed.write_bytes(population["bgzip"].read_bytes())
    assert _comparable(call_vcf(unindexed)) == _comparable(call_vcf(population["plain"]))


def test_chr_prefixed_and_unprefixed_contigs_give_the_same_results(population):
    with_chr = _comparable(call_vcf(population["plain"]))
    assert with_chr == _comparable(call_vcf(population["nochr"]))
    assert with_chr == _comparable(call_vcf(population["nochr_bgzip"]))


def test_plain_gzip_input_is_read(make_vcf, vcf_dir: Path):
    plain = make_vcf({"S1": EXAMPLE}, genes=GENES)
    gz = vcf_dir / "plain_gzip.vcf.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert _comparable(call_vcf(gz, genes=GENES)) == _comparable(call_vcf(plain, genes=GENES))


# --- samples ------------------------------------------------------------------------------------


def test_multi_sample_file_gives_one_result_per_sample_in_file_order(make_vcf):
    samples = {
        "Zed": {"CYP2C19": ("*2", "*2")},
        "Amy": {"CYP2C19": ("*1", "*17")},
        "Mid": {"CYP2C19": ("*1", "*2")},
    }
    path = make_vcf(samples)
    results = list(call_vcf(path, genes=["CYP2C19"]))
    assert [r.sample for r in results] == ["Zed", "Amy", "Mid"]
    assert [r.genes["CYP2C19"].diplotypes[0] for r in results] == ["*2/*2", "*1/*17", "*1/*2"]
    assert [r.genes["CYP2C19"].phenotype for r in results] == [
        "Poor Metabolizer", "Rapid Metabolizer", "Intermediate Metabolizer",
    ]
    one = call_one(path, genes=["CYP2C19"], sample="Amy")
    assert one.sample == "Amy"
    assert one.genes["CYP2C19"].diplotypes == ["*1/*17"]
    assert one.model_dump() == results[1].model_dump()


def test_unknown_sample_raises_with_file_name(make_vcf):
    path = make_vcf({"S1": EXAMPLE}, genes=GENES)
    with pytest.raises(PgxInputError, match="NOBODY") as err:
        list(call_vcf(path, sample="NOBODY"))
    assert path.name in str(err.value)


# --- example genotypes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_result(vcf_dir: Path):
    path = vcfgen.write_vcf(vcf_dir / "example.vcf", {"P1": EXAMPLE}, genes=GENES)
    return call_one(path, genes=GENES)


def test_cyp2c19_star2_star17_is_intermediate(example_result):
    r = example_result.genes["CYP2C19"]
    assert (r.status, r.diplotypes, r.phenotype) == ("called", ["*2/*17"], "Intermediate Metabolizer")
    assert r.missing_positions == [] and r.unexpected_variants == []


def test_cyp2c9_star1_star3_is_activity_1_intermediate(example_result):
    r = example_result.genes["CYP2C9"]
    assert (r.status, r.diplotypes, r.phenotype) == ("called", ["*1/*3"], "Intermediate Metabolizer")
    assert r.activity_score == 1.0


def test_tpmt_star1_star3a(example_result):
    r = example_result.genes["TPMT"]
    assert r.status == "called"
    assert r.diplotypes[0] == "*1/*3A"  # *3B/*3C fits too, with a lower definition score
    assert r.phenotype == "Intermediate Metabolizer"


def test_slco1b1_star1_star5_is_decreased_function(example_result):
    r = example_result.genes["SLCO1B1"]
    assert (r.status, r.diplotypes, r.phenotype) == ("called", ["*1/*5"], "Decreased Function")


@pytest.mark.parametrize("gene", ["UGT1A1", "DPYD", "NUDT15", "CYP3A5"])
def test_other_example_genotypes(example_result, gene):
    r = example_result.genes[gene]
    a, b = EXAMPLE[gene]
    assert r.status == "called"
    assert r.diplotypes[0] == f"{a}/{b}"
    assert r.phenotype == phenotype_of(gene, a, b).phenotype != INDETERMINATE


# --- missing data ---------------------------------------------------------------------------------


def _consistent_pairs(gene: str, states: np.ndarray, observed: np.ndarray) -> list[tuple[str, str]]:
    """Oracle: every unordered pair of non-structural alleles whose unphased genotype agrees with
    ``states`` (positions x 2 ALT indices) at the observed positions."""
    table = vcfgen.SiteTable([gene])
    d = table.definitions[gene]
    names = [a.name for a in d.alleles if not a.structural]
    m = np.array([table.matrix[gene][table.allele_index[gene][n]] for n in names])
    lo_obs, hi_obs = states.min(axis=1), states.max(axis=1)
    out = []
    for i, j in itertools.combinations_with_replacement(range(len(names)), 2):
        lo, hi = np.minimum(m[i], m[j]), np.maximum(m[i], m[j])
        if ((lo == lo_obs) & (hi == hi_obs) | ~observed).all():
            out.append((names[i], names[j]))
    return out


@pytest.mark.parametrize("mode", ["drop", "nocall", "half"])
@pytest.mark.parametrize(
    "rsids, hidden",
    [
        (("rs4986893",), "*1/*3"),  # *3: no function
        (("rs4244285", "rs12769205"), "*1/*2"),  # *2: no function (both of its own positions)
    ],
)
def test_missing_no_function_position_is_not_called_normal(make_vcf, mode, rsids, hidden):
    loci = [(p.chrom, p.pos) for p in (_position("CYP2C19", r) for r in rsids)]
    options = {
        "drop": {"drop": loci},
        "nocall": {"nocall": loci},
        "half": {"gt_override": {locus: "0/." for locus in loci}},
    }[mode]
    path = make_vcf({"S": {"CYP2C19": ("*1", "*1")}}, genes=["CYP2C19"], **options)
    r = call_one(path, genes=["CYP2C19"]).genes["CYP2C19"]
    assert sorted(r.missing_positions) == sorted(_position("CYP2C19", x).label for x in rsids)
    assert r.status == "partial"
    assert r.phenotype == INDETERMINATE
    assert "*1/*1" in r.diplotypes and hidden in r.diplotypes, r.diplotypes


def test_missing_position_shared_by_no_function_alleles_only_is_ruled_out_by_the_rest(make_vcf):
    """rs4244285 alone missing on *1/*1: every allele carrying it (*2, ...) also needs
    rs12769205, observed reference, so *1/*1 is the only fit and a confident call is right."""
    pos = _position("CYP2C19", "rs4244285")
    path = make_vcf({"S": {"CYP2C19": ("*1", "*1")}}, genes=["CYP2C19"], nocall=[(pos.chrom, pos.pos)])
    r = call_one(path, genes=["CYP2C19"]).genes["CYP2C19"]
    table = vcfgen.SiteTable(["CYP2C19"])
    ref_states = np.repeat(table.matrix["CYP2C19"][table.allele_index["CYP2C19"]["*1"]][:, None], 2, axis=1)
    observed = np.array([p.pos != pos.pos for p in gene_definition("CYP2C19").positions])
    assert _consistent_pairs("CYP2C19", ref_states, observed) == [("*1", "*1")]
    assert (r.status, r.diplotypes, r.phenotype) == ("called", ["*1/*1"], "Normal Metabolizer")


def test_nocall_is_the_same_as_an_absent_record(make_vcf):
    pos = _position("CYP2C9", "rs1057910")  # *3
    dropped = make_vcf({"S": EXAMPLE}, genes=GENES, drop=[(pos.chrom, pos.pos)])
    nocall = make_vcf({"S": EXAMPLE}, genes=GENES, nocall=[(pos.chrom, pos.pos)])
    a, b = call_one(dropped, genes=GENES), call_one(nocall, genes=GENES)
    assert a.genes == b.genes
    r = a.genes["CYP2C9"]
    assert r.status == "partial" and r.phenotype == INDETERMINATE
    assert r.missing_positions == [pos.label]


@pytest.mark.parametrize("gene", ["CYP2C19", "CYP2C9", "CYP3A5", "TPMT", "NUDT15", "DPYD", "SLCO1B1", "CYP2B6"])
def test_missing_position_on_reference_genotype_never_confident_beyond_the_data(make_vcf, gene):
    """Normal/reference diplotype, each defining position missing in turn: a confident call
    ('called') only when nothing else fits, and a phenotype only when every fit shares it."""
    d = gene_definition(gene)
    ref = d.reference_allele
    table = vcfgen.SiteTable([gene])
    states = np.repeat(table.matrix[gene][table.allele_index[gene][ref]][:, None], 2, axis=1)
    for k, position in enumerate(d.positions):
        path = make_vcf({"S": {gene: (ref, ref)}}, genes=[gene], nocall=[(position.chrom, position.pos)])
        r = call_one(path, genes=[gene]).genes[gene]
        observed = np.ones(len(d.positions), dtype=bool)
        observed[k] = False
        fits = _consistent_pairs(gene, states, observed)
        assert (ref, ref) in fits
        phenotypes = {phenotype_of(gene, a, b).phenotype for a, b in fits}
        label = f"{gene} {position.label}"
        assert r.missing_positions == [position.label], label
        if r.status == "called":
            assert len(fits) == 1 and r.diplotypes == [f"{ref}/{ref}"], (label, fits)
        else:
            assert r.status == "partial", (label, r.status)
            if gene != "DPYD":  # DPYD lists combinations with missing positions read as reference
                assert len(r.diplotypes) == min(len(fits), 50), label
        if len(phenotypes) > 1:
            assert r.phenotype == INDETERMINATE, (label, r.phenotype, phenotypes)
        elif gene == "DPYD":
            # DPYD is more cautious: any missing position gives Indeterminate (unless score 0)
            assert r.phenotype in (INDETERMINATE, phenotypes.pop()), label
        else:
            assert r.phenotype == phenotypes.pop(), label


# --- bad input ----------------------------------------------------------------------------------


def _raises_naming(path: Path, match: str | None = None, **options) -> PgxInputError:
    with pytest.raises(PgxInputError, match=match) as err:
        list(call_vcf(path, **options))
    assert str(path) in str(err.value) or path.name in str(err.value), str(err.value)
    return err.value


def test_text_file_is_not_a_vcf(vcf_dir: Path):
    path = vcf_dir / "notes.txt"
    path.write_text("patient notes\nCYP2C19 *2/*17\n")
    _raises_naming(path, "not a VCF")


def test_missing_file(vcf_dir: Path):
    _raises_naming(vcf_dir / "nowhere.vcf", "no such file")


@pytest.fixture(scope="module")
def big_bgzipped(vcf_dir: Path) -> Path:
    """A small whole-genome-like file: several BGZF blocks, a tabix index."""
    path = vcfgen.write_genome_like_vcf(vcf_dir / "trunc_src.vcf", n_filler=60_000, seed=3)
    assert path.stat().st_size > 4 * 65536  # several BGZF blocks
    return path


def test_genome_like_file_is_read_through_the_index(big_bgzipped, vcf_dir: Path):
    plain = vcf_dir / "genome_like_plain.vcf.gz"
    plain.write_bytes(big_bgzipped.read_bytes())  # same bytes, no index: scanned once
    indexed = _comparable(call_vcf(big_bgzipped))
    assert indexed == _comparable(call_vcf(plain))
    genes = indexed[0]["genes"]
    assert not any(g["status"] == "no_call" and not g["missing_positions"] for g in genes.values())
    assert all(g["missing_positions"] == [] for g in genes.values())


@pytest.mark.parametrize("fraction", [0.3, 0.75, "eof"])
@pytest.mark.parametrize("indexed", [False, True])
def test_truncated_bgzip_raises(big_bgzipped: Path, vcf_dir: Path, fraction, indexed):
    source = big_bgzipped
    data = source.read_bytes()
    cut = len(data) - 28 if fraction == "eof" else int(len(data) * fraction)
    path = vcf_dir / f"truncated_{fraction}_{indexed}.vcf.gz"
    path.write_bytes(data[:cut])
    if indexed:
        Path(str(path) + ".tbi").write_bytes(Path(str(source) + ".tbi").read_bytes())
    _raises_naming(path, "truncated")


def test_truncated_plain_gzip_raises(make_vcf, vcf_dir: Path):
    raw = gzip.compress(make_vcf({"S1": EXAMPLE}, genes=GENES).read_bytes())
    path = vcf_dir / "truncated_plain.vcf.gz"
    path.write_bytes(raw[: len(raw) // 2])
    _raises_naming(path, "truncated")


def test_allele_index_beyond_record_raises(make_vcf):
    pos = _position("CYP2C19", "rs4244285")
    path = make_vcf({"S1": {"CYP2C19": ("*1", "*2")}}, genes=["CYP2C19"], gt_override={(pos.chrom, pos.pos): "0/5"})
    _raises_naming(path, "malformed genotype")


@pytest.mark.parametrize("bgzip", [False, True])
@pytest.mark.parametrize("gt", ["A/B", "0/-1"])
def test_non_numeric_genotype_raises_input_error(make_vcf, gt, bgzip):
    pos = _position("CYP2C19", "rs4244285")
    path = make_vcf(
        {"S1": {"CYP2C19": ("*1", "*2")}}, genes=["CYP2C19"], gt_override={(pos.chrom, pos.pos): gt}, bgzip=bgzip
    )
    _raises_naming(path, "genotype|GT|VCF")


def test_header_without_chrom_line_raises_input_error(make_vcf, vcf_dir: Path):
    text = make_vcf({"S1": EXAMPLE}, genes=GENES).read_text()
    path = vcf_dir / "no_chrom_line.vcf"
    path.write_text(text.split("#CHROM")[0])
    _raises_naming(path)


def test_grch37_file_called_as_grch37_works(make_vcf):
    path = make_vcf({"S1": _only(["CYP2C19", "CYP2C9"])}, assembly="GRCh37")
    r = call_one(path, assembly="GRCh37", genes=["CYP2C19", "CYP2C9"])
    assert r.genes["CYP2C19"].diplotypes == ["*2/*17"]
    assert r.genes["CYP2C9"].diplotypes == ["*1/*3"] and r.genes["CYP2C9"].activity_score == 1.0


@pytest.mark.parametrize("chr_prefix", [True, False])
def test_grch37_file_called_as_grch38_raises(make_vcf, chr_prefix):
    path = make_vcf({"S1": _only(["CYP2C19", "CYP2C9"])}, assembly="GRCh37", chr_prefix=chr_prefix)
    _raises_naming(path, "GRCh37")


@pytest.mark.parametrize("chr_prefix", [True, False])
def test_grch37_contig_lengths_called_as_grch38_raise(make_vcf, chr_prefix):
    path = make_vcf(
        {"S1": _only(["CYP2C19", "CYP2C9"])}, assembly="GRCh37", chr_prefix=chr_prefix, variants_only=True
    )
    assert "length=135534747" in path.read_text()  # GRCh37 chr10
    _raises_naming(path, "GRCh37", genes=["CYP2C19", "CYP2C9"])


def test_wrong_reference_bases_are_detected_as_other_assembly(make_vcf, vcf_dir: Path):
    path = make_vcf({"S1": EXAMPLE}, genes=GENES)
    swap = str.maketrans("ACGT", "CATG")
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            f = line.split("\t")
            f[3] = f[3][0].translate(swap) + f[3][1:]
            f[4] = ",".join(a[0].translate(swap) + a[1:] for a in f[4].split(","))
            line = "\t".join(f)
        lines.append(line)
    bad = vcf_dir / "wrong_ref.vcf"
    bad.write_text("\n".join(lines) + "\n")
    _raises_naming(bad, "reference bases", genes=GENES)


def test_genes_not_callable_from_a_vcf_raise(make_vcf):
    path = make_vcf({"S1": EXAMPLE}, genes=GENES)
    for gene in ("CYP2D6", "NOTAGENE"):
        with pytest.raises(PgxInputError, match=gene):
            list(call_vcf(path, genes=[gene]))


# --- outside calls --------------------------------------------------------------------------------


def _tsv(vcf_dir: Path, name: str, text: str) -> Path:
    path = vcf_dir / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "line, diplotype, phenotype, score",
    [
        ("CYP2D6\t*1/*4", "*1/*4", "Intermediate Metabolizer", 1.0),
        ("CYP2D6\t*4/*1", "*1/*4", "Intermediate Metabolizer", 1.0),
        ("CYP2D6\tCYP2D6*3/CYP2D6*4", "*3/*4", "Poor Metabolizer", 0.0),
        ("CYP2D6\t*2.034/*4", "*2/*4", "Intermediate Metabolizer", 1.0),
    ],
)
def test_cyp2d6_outside_call_is_merged(make_vcf, vcf_dir: Path, line, diplotype, phenotype, score):
    calls = read_outside_calls(_tsv(vcf_dir, "cyp2d6.tsv", f"# from a CNV-aware caller\n{line}\n"))
    path = make_vcf({"S1": EXAMPLE, "S2": EXAMPLE}, genes=GENES)
    results = list(call_vcf(path, genes=GENES, outside_calls=calls))
    assert len(results) == 2
    for result in results:
        r = result.genes["CYP2D6"]
        assert r.status == "outside_call"
        assert r.diplotypes == [diplotype]
        assert r.phenotype == phenotype and r.activity_score == score
        # the VCF genes are unaffected
        assert result.genes["CYP2C19"].diplotypes == ["*2/*17"]
        assert set(result.genes) == {*GENES, "CYP2D6"}


def test_hla_b_outside_call_is_merged(make_vcf, vcf_dir: Path):
    calls = read_outside_calls(_tsv(vcf_dir, "hla.tsv", "HLA-B\t*57:01/*08:01\nCYP2D6\t*1/*4\n"))
    r = call_one(make_vcf({"S1": EXAMPLE}, genes=GENES), genes=GENES, outside_calls=calls)
    hla = r.genes["HLA-B"]
    assert hla.status == "outside_call"
    assert hla.diplotypes == ["*08:01/*57:01"]
    assert {a.name for a in hla.alleles} == {"*57:01", "*08:01"}
    assert r.genes["CYP2D6"].status == "outside_call"


def test_outside_call_replaces_a_vcf_call(make_vcf, vcf_dir: Path):
    calls = read_outside_calls(_tsv(vcf_dir, "cyp2c19.tsv", "CYP2C19\t*1/*2\n"))
    r = call_one(make_vcf({"S1": EXAMPLE}, genes=GENES), genes=GENES, outside_calls=calls).genes["CYP2C19"]
    assert r.status == "outside_call" and r.diplotypes == ["*1/*2"]
    assert r.phenotype == "Intermediate Metabolizer"
    assert any("*2/*17" in n for n in r.notes)


@pytest.mark.parametrize(
    "text, match, line",
    [
        ("CYP2D6\t*1/*4\nFOO1\t*1/*1\n", "unknown gene", 2),
        ("CYP2D6\t*1/*999\n", "unknown allele", 1),
        ("# header\n\nCYP2D6\t*1\n", "not 'A/B'", 3),
        ("HLA-B\t*57:01/xyz\n", "HLA", 1),
        ("CYP2D6\t\tSuper Metabolizer\n", "unknown phenotype", 1),
        ("CYP2D6\t*1/*4\nCYP2D6\t*1/*1\n", "given twice", 2),
        ("CYP2D6\t\n", "neither", 1),
    ],
)
def test_bad_outside_calls_raise_with_file_and_line(vcf_dir: Path, text, match, line):
    path = _tsv(vcf_dir, "bad_outside.tsv", text)
    with pytest.raises(PgxInputError, match=match) as err:
        read_outside_calls(path)
    assert f"{path}:{line}:" in str(err.value)
    assert err.value.line == line


def test_unprefixed_mt_contig_is_read(make_vcf, vcf_dir: Path):
    path = make_vcf({"S": {"MT-RNR1": ("Reference", "m.1555A>G")}}, chr_prefix=False)
    assert call_one(path, genes=["MT-RNR1"]).genes["MT-RNR1"].status == "called"  # 'M' works
    text = path.read_text().replace("\nM\t", "\nMT\t").replace("##contig=<ID=M,", "##contig=<ID=MT,")
    mt = vcf_dir / "mt_contig.vcf"
    mt.write_text(text)
    r = call_one(mt, genes=["MT-RNR1"]).genes["MT-RNR1"]
    assert r.status == "called" and r.missing_positions == []
