"""Regenerate examples/demo_patient.vcf from the knowledge base's allele definitions.

The demo patient: CYP2C19 *2/*17, CYP2C9 *1/*3, SLCO1B1 *1/*5 (decreased function),
TPMT *1/*3A, reference alleles at every other defining position of every callable gene.
Run: .venv/bin/python examples/make_demo_vcf.py
"""

from pathlib import Path

from pgxtwin.genomics.synthetic import write_vcf
from pgxtwin.knowledge.alleles import callable_genes

DEMO = {"CYP2C19": ("*2", "*17"), "CYP2C9": ("*1", "*3"), "SLCO1B1": ("*1", "*5"), "TPMT": ("*1", "*3A")}

if __name__ == "__main__":
    write_vcf(Path(__file__).with_name("demo_patient.vcf"), {"DEMO-001": DEMO}, list(callable_genes()))
