"""Twin -> Genomics Reporting IG Bundle: content, references, round trip, and real validators
(the FHIR R4 JSON Schema and the ``fhir`` npm package offline; fhir.resources R4B models)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from pgxtwin.api.fhir.bundle_import import facts_from_resources, plan_import, resources_in
from pgxtwin.api.fhir.export import export_bundle
from pgxtwin.genomics.outside_calls import OutsideCall, outside_gene_result
from pgxtwin.twin.state import TwinState, apply, parse_event

from .fhir_validator import load_many, node_validate

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
LOINC = "http://loinc.org"


def twin_with(calls: dict[str, tuple[str | None, str | None]], patient_id: str = "pat-x") -> TwinState:
    """A twin with outside calls {gene: (diplotype, phenotype)}, a sex and a birth date."""
    state = apply(TwinState.empty(patient_id), parse_event({"type": "demographics_set", "sex": "F",
                                                            "birth_date": "1980-02-03"}))
    for gene, (diplotype, phenotype) in calls.items():
        result = outside_gene_result(OutsideCall(gene, diplotype, phenotype, "test"))
        state = apply(state, parse_event({"type": "outside_call_set", "gene": gene,
                                          "result": result.model_dump(mode="json")}))
    return state


@pytest.fixture(scope="module")
def ig_twin() -> TwinState:
    """The twin the IG 3.0.0 PGx examples describe (CYP2C19 *2/*2, CYP2C9 *1/*1, CYP2D6 *1/*7, VKORC1, HLA-B*15:02)."""
    resources = [r for doc in load_many("genomics-reporting-3.0.0/[OP]*.json") for r in resources_in(doc)]
    facts = facts_from_resources(resources)
    return plan_import(facts, TwinState.empty(str(facts.patient_id))).state


def entries(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def by_id(bundle: dict[str, Any], resource_id: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == resource_id)


def component(resource: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in resource["component"] if c["code"]["coding"][0]["code"] == code)


def test_genotypes_implications_and_recommendations(ig_twin: TwinState) -> None:
    bundle = export_bundle(ig_twin, now=NOW)
    assert bundle["type"] == "collection" and bundle["identifier"]["value"] == f"CGPatientExample01/{ig_twin.version}"
    patient = entries(bundle, "Patient")[0]
    assert patient["id"] == "CGPatientExample01" and patient["gender"] == "male"

    geno = by_id(bundle, "pgx-genotype-CYP2C19")
    assert geno["code"]["coding"][0]["code"] == "84413-4" and geno["valueCodeableConcept"]["text"] == "CYP2C19 *2/*2"
    gene = component(geno, "48018-6")["valueCodeableConcept"]["coding"][0]
    assert (gene["code"], gene["display"]) == ("HGNC:2621", "CYP2C19")
    assert by_id(bundle, "pgx-genotype-HLA-B")["valueCodeableConcept"]["text"] == "HLA-B*15:02"

    clopidogrel = by_id(bundle, "pgx-implication-clopidogrel-CYP2C19")
    phenotype = component(clopidogrel, "therapeutic-implication")["valueCodeableConcept"]
    assert phenotype["coding"][0]["code"] == "LA9657-3" and phenotype["text"] == "CYP2C19 Poor Metabolizer"
    medication = component(clopidogrel, "51963-7")["valueCodeableConcept"]["coding"][0]
    assert (medication["code"], medication["display"]) == ("32968", "clopidogrel")
    assert component(clopidogrel, "93044-6")["valueCodeableConcept"]["text"] == "CPIC Level A"
    assert component(clopidogrel, "conclusion-string")["valueString"].startswith("Avoid standard dose")
    assert clopidogrel["extension"][0]["valueRelatedArtifact"]["url"].startswith("https://cpicpgx.org/")

    task = by_id(bundle, "pgx-recommendation-clopidogrel")
    assert task["code"]["coding"][0]["code"] == "LA26421-0" and (task["status"], task["intent"]) == ("requested", "proposal")
    assert by_id(bundle, "pgx-recommendation-citalopram")["code"]["coding"][0]["code"] == "LA26422-8"
    carbamazepine = [t for t in entries(bundle, "Task") if t["id"].startswith("pgx-recommendation-carbamazepine")]
    assert len(carbamazepine) == 1  # HLA-B*15:02 rule

    urls = {e["fullUrl"] for e in bundle["entry"]}
    references = [clopidogrel["subject"]["reference"], clopidogrel["derivedFrom"][0]["reference"],
                  task["reasonReference"]["reference"], task["for"]["reference"]]
    assert all(ref in urls for ref in references)
    assert clopidogrel["derivedFrom"][0]["reference"] == next(e["fullUrl"] for e in bundle["entry"]
                                                               if e["resource"]["id"] == "pgx-genotype-CYP2C19")


def test_same_twin_same_references(ig_twin: TwinState) -> None:
    first, second = export_bundle(ig_twin, now=NOW), export_bundle(ig_twin, now=NOW)
    assert first == second
    assert len({e["fullUrl"] for e in first["entry"]}) == len(first["entry"])
    assert len({e["resource"]["id"] for e in first["entry"]}) == len(first["entry"])


def test_export_then_import_gives_the_same_genotype(ig_twin: TwinState) -> None:
    bundle = export_bundle(ig_twin, now=NOW)
    facts = facts_from_resources(resources_in(bundle))
    again = plan_import(facts, TwinState.empty("CGPatientExample01")).state
    key = lambda r: (r.diplotypes, r.phenotype, r.detected_alleles)  # noqa: E731
    assert {g: key(r) for g, r in again.genotype.outside_calls.items()} == \
        {g: key(r) for g, r in ig_twin.genotype.outside_calls.items()}
    assert again.demographics == ig_twin.demographics
    assert not [n for n in facts.notes if n.severity == "warning"]


def test_phenotype_only_genes_give_implications_without_genotype() -> None:
    state = twin_with({"CYP3A5": (None, "Poor Metabolizer"), "DPYD": (None, "Intermediate Metabolizer")})
    bundle = export_bundle(state, now=NOW)
    assert not [o for o in entries(bundle, "Observation") if o["code"]["coding"][0]["code"] == "84413-4"]
    tacrolimus = by_id(bundle, "pgx-implication-tacrolimus-CYP3A5")
    assert "derivedFrom" not in tacrolimus
    assert component(tacrolimus, "therapeutic-implication")["valueCodeableConcept"]["coding"][0]["code"] == "LA9657-3"
    assert by_id(bundle, "pgx-recommendation-fluorouracil")["code"]["coding"][0]["code"] == "LA26422-8"


def test_twin_without_genotype_exports_only_the_patient() -> None:
    bundle = export_bundle(TwinState.empty("nobody-yet"), now=NOW)
    assert [e["resource"] for e in bundle["entry"]] == [{"resourceType": "Patient", "id": "nobody-yet"}]


def _exports(ig_twin: TwinState) -> list[dict[str, Any]]:
    return [
        export_bundle(ig_twin, now=NOW),
        export_bundle(twin_with({"CYP2C19": ("*1/*17", None), "CYP2D6": ("*1/*4", None), "CYP3A5": ("*3/*3", None),
                                 "SLCO1B1": ("*1/*5", None), "TPMT": ("*1/*3A", None), "UGT1A1": ("*1/*28", None),
                                 "HLA-B": ("*57:01/*08:01", None), "HLA-A": ("*31:01/*02:01", None)}), now=NOW),
        export_bundle(TwinState.empty("nobody-yet"), now=NOW),
    ]


def test_exports_parse_as_fhir_r4b_models(ig_twin: TwinState) -> None:
    for bundle in _exports(ig_twin):
        parsed = Bundle.model_validate(bundle)
        assert len(parsed.entry or []) == len(bundle["entry"])


def test_exports_pass_the_fhir_r4_schema_and_validator(ig_twin: TwinState) -> None:
    bundles = _exports(ig_twin)
    broken = {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}  # control: must fail
    results = node_validate([*bundles, broken])
    for bundle, result in zip(bundles, results):
        assert result == {"schema": [], "fhir": []}, (bundle["identifier"], result)
    assert results[-1]["schema"] and results[-1]["fhir"]
