"""FHIR Bundle -> twin: the shared examples, unit conversion, genotypes, idempotence, leniency."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pgxtwin.api.cds.drafts import read_order
from pgxtwin.api.fhir.bundle_import import (
    facts_from_resources,
    import_document,
    plan_import,
    resources_in,
)
from pgxtwin.api.fhir.fhirjson import Located
from pgxtwin.api.fhir.genotypes import GenotypeError, parse_genotype
from pgxtwin.api.fhir.resource_facts import drug_name, record_id
from pgxtwin.cli_import import export, import_bundle
from pgxtwin.errors import PgxInputError
from pgxtwin.genomics.outside_calls import canonical_diplotype
from pgxtwin.knowledge.alleles import gene_definition
from pgxtwin.store.repository import TwinStore
from pgxtwin.twin.state import TwinState

from .fhir_validator import collection, fixture_files, load, load_many

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
TBD = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
PID = "pat-1"
SUBJECT = {"reference": f"Patient/{PID}"}


@pytest.fixture()
def store(tmp_path: Path):
    with TwinStore(f"sqlite:///{tmp_path / 'twins.db'}", actor="tester", entry_point="test") as s:
        yield s


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1970-05-01"} | extra


def quantity_obs(rid: str, code: str, value: float, unit: str, when: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": SUBJECT, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit} | extra}


def medication_request(rid: str, rxnorm: str, name: str, authored: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}]},
            "subject": SUBJECT, "authoredOn": authored} | extra


def administration(rid: str, when: str, mg: float, request: str | None = None) -> dict[str, Any]:
    out = {"resourceType": "MedicationAdministration", "id": rid, "status": "completed",
           "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "42316", "display": "tacrolimus"}]},
           "subject": SUBJECT, "effectiveDateTime": when,
           "dosage": {"dose": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}}
    if request:
        out["request"] = {"reference": f"MedicationRequest/{request}"}
    return out


def genotype_obs(rid: str, gene_hgnc: str, gene: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "84413-4"}]}, "subject": SUBJECT,
            "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                "code": gene_hgnc, "display": gene}]}}],
            "valueCodeableConcept": {"text": text}}


def implication_obs(rid: str, answer: str, display: str, derived_from: str | None = None,
                    gene: tuple[str, str] | None = None) -> dict[str, Any]:
    components = [{"code": {"coding": [{"system": TBD, "code": "therapeutic-implication"}]},
                   "valueCodeableConcept": {"coding": [{"system": LOINC, "code": answer, "display": display}]}},
                  {"code": {"coding": [{"system": LOINC, "code": "51963-7"}]},
                   "valueCodeableConcept": {"coding": [{"system": RXNORM, "code": "32968", "display": "clopidogrel"}]}}]
    if gene:
        components.append({"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"code": gene[0], "display": gene[1]}]}})
    out = {"resourceType": "Observation", "id": rid, "status": "final",
           "code": {"coding": [{"system": TBD, "code": "therapeutic-implication"}]}, "subject": SUBJECT,
           "component": components}
    if derived_from:
        out["derivedFrom"] = [{"reference": f"Observation/{derived_from}"}]
    return out


# ---------------------------------------------------------------------------------------------
# the shared examples


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.name)
def test_every_shared_example_imports_with_its_skipped_items_reported(store: TwinStore, path: Path) -> None:
    report = import_document(store, json.loads(path.read_text(encoding="utf-8")), actor="tester")
    assert report.version_after == report.version_before + len(report.imported)
    outcome = report.operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"].startswith(f"twin {report.patient_id}")
    reported = {i["diagnostics"] for i in outcome["issue"][1:]}
    for note in report.skipped:  # every skipped item is named with its reason
        assert any(note.source in text and note.message in text for text in reported) or note.severity == "information"
    assert report.imported or report.skipped or report.notes
    audit = [a for a in store.audit_log(report.patient_id) if a.action == "fhir_import"]
    assert audit and audit[-1].actor == "tester"


def test_shared_examples_exist_or_tests_say_so() -> None:
    if not fixture_files():
        pytest.skip("../shared/fixtures/fhir is absent")
    assert len(fixture_files()) >= 20


def test_synthea_patient_becomes_covariates_medications_and_egfr(store: TwinStore) -> None:
    bundle = load("synthea-r4/Louis_Maggio_2e275d4b-855a-4eb2-9021-5410aa8acd4f.json")
    report = import_document(store, bundle, actor="tester")
    pid = "bae2bf00-eca1-47fb-bb43-272f8de1449c"
    assert report.patient_id == pid and report.created
    state = store.state_at(pid)
    assert state.demographics.sex == "M" and state.demographics.birth_date.isoformat() == "1976-01-16"
    weights = [c for c in state.covariates if c.covariate == "weight"]
    assert len(weights) == 5 and all(90 < w.value < 110 for w in weights)
    creatinine = [c for c in state.covariates if c.covariate == "serum_creatinine"]  # LOINC 38483-4 (blood)
    assert len(creatinine) == 1 and creatinine[0].value == pytest.approx(1.3736992817704916)
    # "Naproxen sodium 220 MG": the CPIC drug name the medication reader finds in it
    assert {m.drug for m in state.current_medications} == {"diazepam", "chlorpheniramine maleate", "naproxen"}
    egfr = [o for o in state.observations if o.kind == "lab"]
    assert len(egfr) == 1 and egfr[0].code == "33914-3" and egfr[0].unit == "mL/min/{1.73_m2}"
    stopped = [n for n in report.skipped if "status stopped without an end date" in n.message]
    assert len(stopped) == 2
    snapshot = state.covariates_at(creatinine[0].time)
    assert snapshot.crcl_ml_min is not None and snapshot.egfr_ml_min_1_73m2 is not None


def test_reimporting_the_same_bundle_adds_nothing(store: TwinStore) -> None:
    bundle = load("synthea-r4/Cameron_Greenfelder_9b55212c-8024-4b8b-bc82-fa605435f63b.json")
    first = import_document(store, bundle, actor="tester")
    second = import_document(store, bundle, actor="tester")
    assert first.imported and not second.imported and not second.created
    assert second.version_after == first.version_after
    assert len(second.duplicates) == len(first.imported)
    assert len(store.events(first.patient_id)) == first.version_after


def test_genomics_reporting_examples_give_knowledge_base_phenotypes(store: TwinStore) -> None:
    resources = [r for doc in load_many("genomics-reporting-3.0.0/[OPT]*.json") for r in resources_in(doc)]
    facts = facts_from_resources(resources)
    assert facts.patient_id == "CGPatientExample01"
    state = plan_import(facts, TwinState.empty("CGPatientExample01")).state
    calls = state.genotype.outside_calls
    assert calls["CYP2C19"].diplotypes == ["*2/*2"] and calls["CYP2C19"].phenotype == "Poor Metabolizer"
    assert calls["CYP2C9"].diplotypes == ["*1/*1"] and calls["CYP2C9"].phenotype == "Normal Metabolizer"
    assert calls["CYP2D6"].diplotypes == ["*1/*7"]  # PharmVar *7.001 / *1.001 read as core alleles
    assert calls["VKORC1"].diplotypes == ["Reference/rs9923231"]  # "rs9923231 C/T"
    assert calls["HLA-B"].diplotypes == [] and calls["HLA-B"].detected_alleles == ["*15:02"]
    agree = [n for n in facts.notes if "agrees with the genotype *2/*2" in n.message]
    assert {n.source for n in agree} == {f"Observation/TxImp0{i}" for i in range(1, 6)}
    hla_risk = next(n for n in facts.skipped if n.source == "Observation/TherapeuticImplicationExample1")
    assert "HLA risks are derived from the allele" in hla_risk.message


def test_genomics_operations_output_with_older_implication_shape() -> None:
    doc = load("genomics-operations/find_subject_tx_implications_NB6TK328_rxnorm704_amitriptyline.json")
    facts = facts_from_resources(resources_in(doc))
    state = plan_import(facts, TwinState.empty("NB6TK328")).state
    assert state.genotype.outside_calls["CYP2C19"].diplotypes == ["*1/*17"]
    assert state.genotype.outside_calls["CYP2C19"].phenotype == "Rapid Metabolizer"
    assert state.genotype.outside_calls["CYP2D6"].phenotype == "Normal Metabolizer"
    notes = {n.source: n.message for n in facts.notes}
    assert notes["Observation/dv-631a4ae012d58a72041f3aba"] == "CYP2C19 Rapid Metabolizer: agrees with the genotype *1/*17"


def test_malformed_ig_bundle_is_imported_leniently(store: TwinStore) -> None:
    report = import_document(store, load("genomics-reporting-3.0.0/Bundle-bundle-pgxexample.json"), actor="tester")
    assert report.patient_id == "ExamplePatient"
    warnings = {n.source: n.message for n in report.skipped if n.severity == "warning"}
    assert "unknown allele '*35B'" in warnings["Observation/genotype-pgx-example"]
    info = {n.source: n.message for n in report.skipped}
    assert "haplotype alone" in info["Observation/haplotype-1-pgx-example"]
    assert "status 'unknown'" in info["MedicationStatement/current-med-example"]


# ---------------------------------------------------------------------------------------------
# units, medications, doses, levels


def tacrolimus_bundle() -> dict[str, Any]:
    dosage = [{"route": {"coding": [{"system": SNOMED, "code": "26643006"}]},
               "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
               "doseAndRate": [{"doseQuantity": {"value": 3, "unit": "mg", "system": UCUM, "code": "mg"}}]}]
    return collection(
        patient(),
        quantity_obs("w1", "29463-7", 154.3, "[lb_av]", "2024-01-01T07:00:00Z"),
        quantity_obs("c1", "2160-0", 88.4, "umol/L", "2024-01-01T07:00:00Z"),
        medication_request("mr-tac", "42316", "tacrolimus", "2024-01-01T08:00:00Z", dosageInstruction=dosage),
        administration("ma-1", "2024-01-01T08:00:00Z", 3, "mr-tac"),
        administration("ma-2", "2024-01-01T20:00:00Z", 3),
        quantity_obs("lvl-1", "11253-2", 8.5, "ng/mL", "2024-01-02T07:45:00Z"),
        quantity_obs("lvl-2", "11253-2", 1.0, "ng/mL", "2024-01-02T07:50:00Z", comparator="<"),
    )


def test_units_regimen_doses_and_levels(store: TwinStore) -> None:
    report = import_document(store, tacrolimus_bundle(), actor="tester")
    assert not [n for n in report.skipped if n.severity == "warning"], report.skipped
    state = store.state_at(PID)
    weight = next(c for c in state.covariates if c.covariate == "weight")
    assert weight.value == pytest.approx(154.3 * 0.45359237) and weight.original == "154.3 lb"
    creatinine = next(c for c in state.covariates if c.covariate == "serum_creatinine")
    assert creatinine.value == pytest.approx(1.0, rel=1e-3)  # 88.4 µmol/L, molar mass 113.12 g/mol
    med = state.medications["fhir-MedicationRequest-mr-tac"]
    assert med.drug == "tacrolimus" and med.route == "oral"
    assert med.regimen[0].dose_mg == 3 and med.regimen[0].interval_h == 12
    assert [d.amount_mg for d in med.doses] == [3, 3]
    level, blq = state.concentrations("tacrolimus")
    assert level.value == pytest.approx(0.0085) and level.original_unit == "ng/mL"
    assert blq.blq and blq.lloq == pytest.approx(0.001) and blq.value is None


def test_level_without_doses_is_skipped_with_the_twins_reason(store: TwinStore) -> None:
    bundle = collection(patient(), quantity_obs("lvl-1", "11253-2", 8.5, "ng/mL", "2024-01-02T07:45:00Z"),
                        quantity_obs("lvl-2", "11253-2", 8.5, "ng/mL", "2024-01-02"))
    report = import_document(store, bundle, actor="tester")
    reasons = {n.source: n.message for n in report.skipped}
    assert "no dose of tacrolimus is recorded" in reasons["Observation/lvl-1"]
    assert "without a time of day" in reasons["Observation/lvl-2"]
    assert [kind for _, kind in report.imported] == ["demographics_set"]


def test_implausible_values_are_skipped_and_the_rest_imported(store: TwinStore) -> None:
    bundle = collection(patient(), quantity_obs("w1", "29463-7", 70, "kg", "2024-01-01"),
                        quantity_obs("w2", "29463-7", 700, "kg", "2024-01-02"),
                        quantity_obs("w3", "29463-7", 70, "mmol/L", "2024-01-03"),
                        quantity_obs("h1", "8302-2", 70, "[in_i]", "2024-01-01"))
    report = import_document(store, bundle, actor="tester")
    reasons = {n.source: n.message for n in report.skipped}
    assert "outside the plausible range" in reasons["Observation/w2"]
    assert "not a kg-compatible unit" in reasons["Observation/w3"]
    state = store.state_at(PID)
    assert [round(c.value, 2) for c in state.covariates] == [70.0, 177.8]


def test_dose_without_a_medication_is_skipped() -> None:
    facts = facts_from_resources([patient(), administration("ma-1", "2024-01-01T08:00:00Z", 3)])
    plan = plan_import(facts, TwinState.empty(PID))
    assert "no tacrolimus medication running" in next(n.message for n in plan.skipped if n.source == "MedicationAdministration/ma-1")


def test_completed_medication_with_an_end_is_started_and_stopped() -> None:
    statement = {"resourceType": "MedicationStatement", "id": "ms-1", "status": "completed", "subject": SUBJECT,
                 "medicationCodeableConcept": {"text": "Omeprazole 20 MG Delayed Release Oral Capsule"},
                 "effectivePeriod": {"start": "2023-01-01", "end": "2023-02-01"}}
    topical = medication_request("mr-2", "000", "Hydrocortisone 1 % Topical Cream", "2023-01-01",
                                 dosageInstruction=[{"route": {"coding": [{"system": SNOMED, "code": "6064005",
                                                                           "display": "Topical route"}]}}])
    plan = plan_import(facts_from_resources([statement, topical], patient_id=PID), TwinState.empty(PID))
    med = plan.state.medications["fhir-MedicationStatement-ms-1"]
    assert med.drug == "omeprazole" and med.stopped_at is not None and not med.current
    assert "route Topical route, 6064005 is not modelled" in next(n.message for n in plan.skipped if n.source == "MedicationRequest/mr-2")


# ---------------------------------------------------------------------------------------------
# genotypes and phenotypes


def test_phenotype_only_implication_and_disagreement_with_a_genotype() -> None:
    alone = implication_obs("imp-1", "LA9657-3", "Poor metabolizer", gene=("HGNC:2621", "CYP2C19"))
    facts = facts_from_resources([patient(), alone])
    state = plan_import(facts, TwinState.empty(PID)).state
    assert state.genotype.outside_calls["CYP2C19"].phenotype == "Poor Metabolizer"
    assert state.genotype.outside_calls["CYP2C19"].diplotypes == []

    geno = genotype_obs("g-1", "HGNC:2621", "CYP2C19", "CYP2C19 *1/*1")
    wrong = implication_obs("imp-2", "LA9657-3", "Poor metabolizer", derived_from="g-1")
    facts = facts_from_resources([patient(), wrong, geno])
    state = plan_import(facts, TwinState.empty(PID)).state
    assert state.genotype.outside_calls["CYP2C19"].phenotype == "Normal Metabolizer"
    warning = next(n for n in facts.notes if n.source == "Observation/imp-2")
    assert warning.severity == "warning" and "the twin keeps 'Normal Metabolizer'" in warning.message


def test_a_reported_phenotype_does_not_replace_a_diplotype_in_the_twin() -> None:
    state = plan_import(facts_from_resources([patient(), genotype_obs("g-1", "HGNC:2621", "CYP2C19", "*1/*2")]),
                        TwinState.empty(PID)).state
    later = facts_from_resources([implication_obs("imp-1", "LA9657-3", "Poor metabolizer",
                                                  gene=("HGNC:2621", "CYP2C19"))], patient_id=PID)
    plan = plan_import(later, state)
    assert not plan.events
    assert "does not replace it" in plan.skipped[0].message


def test_conflicting_genotypes_are_skipped() -> None:
    facts = facts_from_resources([patient(), genotype_obs("g-1", "HGNC:2621", "CYP2C19", "*1/*2"),
                                  genotype_obs("g-2", "HGNC:2621", "CYP2C19", "*2/*2")])
    assert not facts.genotypes
    assert {n.source for n in facts.skipped if "genotypes disagree" in n.message} == {"Observation/g-1", "Observation/g-2"}


@pytest.mark.parametrize("text, expected", [
    ("CYP2C19*2/*2", "*2/*2"), ("CYP2C19 *17/*1", "*1/*17"), ("*2 / *1", "*1/*2"),
    ("CYP2C19*2.001 / CYP2C19*1.002", "*1/*2"),
])
def test_diplotype_spellings(text: str, expected: str) -> None:
    assert parse_genotype("CYP2C19", text).diplotype == expected


@pytest.mark.parametrize("gene, text, reason", [
    ("CYP2C19", "CYP2C19*2", "is not a diplotype"),
    ("CYP2C9", "CYP2C9 *4/*35B", "unknown allele '*35B'"),
    ("VKORC1", "VKORC1 rs9923231 G/T", "neither the reference"),
    ("HLA-B", "HLA-B*XY", "not an HLA allele name"),
])
def test_unreadable_genotypes_say_why(gene: str, text: str, reason: str) -> None:
    with pytest.raises(GenotypeError, match=re.escape(reason)):
        parse_genotype(gene, text)


_GENES = ("CYP2C19", "CYP2C9", "CYP2D6", "CYP3A5", "TPMT")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_GENES), st.data())
def test_any_known_diplotype_reads_back_canonically(gene: str, data: st.DataObject) -> None:
    names = [a.name for a in gene_definition(gene).alleles if a.name.startswith("*") and not a.structural]
    a, b = data.draw(st.sampled_from(names)), data.draw(st.sampled_from(names))
    spelling = data.draw(st.sampled_from(["{g}{a}/{g}{b}", "{g} {a}/{b}", "{a} / {b}", "{g}{a} / {g}{b}"]))
    text = spelling.format(g=gene, a=a, b=b)
    assert parse_genotype(gene, text).diplotype == canonical_diplotype(gene, a, b)


# ---------------------------------------------------------------------------------------------
# patients, subjects, bad documents


def test_resource_of_another_patient_is_skipped_with_a_warning() -> None:
    other = quantity_obs("w9", "29463-7", 80, "kg", "2024-01-01") | {"subject": {"reference": "Patient/someone-else"}}
    facts = facts_from_resources([patient(), other])
    assert facts.skipped[0].severity == "warning" and "not the patient pat-1" in facts.skipped[0].message
    assert not facts.covariates


def test_patient_from_subjects_when_no_patient_resource() -> None:
    facts = facts_from_resources([quantity_obs("w1", "29463-7", 80, "kg", "2024-01-01")])
    assert facts.patient_id == PID and len(facts.covariates) == 1


def test_two_patients_or_none_is_an_input_error(store: TwinStore) -> None:
    with pytest.raises(PgxInputError, match="2 patients"):
        facts_from_resources([patient(), patient(id="pat-2")])
    with pytest.raises(PgxInputError, match="no patient"):
        import_document(store, collection({"resourceType": "Organization", "id": "o"}))
    with pytest.raises(PgxInputError, match="not a FHIR resource"):
        import_document(store, [1, 2])
    with pytest.raises(PgxInputError, match="expected a FHIR Bundle, got 'Patient'"):
        import_document(store, patient(), require_bundle=True)
    with pytest.raises(PgxInputError, match="is not a FHIR id"):
        import_document(store, collection(patient(id="bad id!")))
    assert store.patients() == []


def test_record_ids_are_stable_and_valid() -> None:
    long = Located({"resourceType": "MedicationAdministration", "id": "x" * 64}, "e")
    anonymous = Located({"resourceType": "Observation", "valueQuantity": {"value": 1}}, "entry[3]")
    for item in (long, anonymous, Located({"resourceType": "Observation", "id": "a.b-c"}, "e")):
        rid = record_id(item)
        assert rid == record_id(copy.deepcopy(item)) and re.fullmatch(r"[A-Za-z0-9_\-.:]{1,64}", rid)
    assert record_id(Located({"resourceType": "Observation", "id": "a.b-c"}, "e")) == "fhir-Observation-a.b-c"


@pytest.mark.parametrize("text, drug", [
    ("Hydrochlorothiazide 25 MG", "hydrochlorothiazide"), ("Diazepam [Valium]", "diazepam"),
    ("Prograf 1 MG Oral Capsule", "tacrolimus"), ("Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet", "amoxicillin"),
    ("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", "metformin hydrochloride"),
    ("Fluconazole 150 MG Oral Tablet", "fluconazole"), ("100 ML", None),
])
def test_drug_names_from_medication_text(text: str, drug: str | None) -> None:
    assert drug_name(text) == drug


# JSON of any shape where the parser reads FHIR elements: it must skip, never crash
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["code", "valueQuantity", "valueCodeableConcept", "component", "subject", "status",
                         "effectiveDateTime", "derivedFrom", "medicationCodeableConcept", "dosageInstruction",
                         "dosage", "authoredOn", "gender", "birthDate", "id", "intent", "effectivePeriod", "request"])
_resource = st.builds(
    lambda kind, fields: {"resourceType": kind} | fields,
    st.sampled_from(["Patient", "Observation", "MedicationRequest", "MedicationStatement", "MedicationAdministration",
                     "Task", "Bundle", "Parameters"]),
    st.dictionaries(_keys, _json, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_resource, max_size=6), st.data())
def test_parser_never_crashes_on_malformed_resources(resources: list[dict[str, Any]], data: st.DataObject) -> None:
    # the shared examples' elements mixed in, so real codes meet wrong shapes too
    if fixture_files() and data.draw(st.booleans()):
        example = json.loads(data.draw(st.sampled_from(fixture_files()[:24])).read_text(encoding="utf-8"))
        resources = [*resources_in(example)[:5], *resources]
    try:
        facts = facts_from_resources(resources, patient_id=PID)
    except PgxInputError:
        return
    plan = plan_import(facts, TwinState.empty(PID))
    assert plan.state.version == len(plan.events)


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PGXTWIN_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    app = typer.Typer()
    app.command("import")(import_bundle)
    app.command("export")(export)
    return app


def test_cli_import_then_export(cli: typer.Typer, tmp_path: Path) -> None:
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(tacrolimus_bundle()))
    runner = CliRunner()
    done = runner.invoke(cli, ["import", str(source)])
    assert done.exit_code == 0, done.output
    assert "twin pat-1 (twin created): imported 8 facts" in done.output
    again = runner.invoke(cli, ["import", str(source), "--json"])
    outcome = json.loads(again.output)
    assert outcome["resourceType"] == "OperationOutcome" and "imported 0 facts" in outcome["issue"][0]["diagnostics"]
    out = tmp_path / "export.json"
    done = runner.invoke(cli, ["export", PID, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["entry"][0]["resource"] == {"resourceType": "Patient", "id": PID,
                                                                    "gender": "female", "birthDate": "1970-05-01"}


def test_cli_bad_input_is_one_line_naming_the_file(cli: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = CliRunner().invoke(cli, ["import", str(bad)])
    assert isinstance(done.exception, PgxInputError) and str(done.exception).startswith(f"{bad}:1: not JSON")
    done = CliRunner().invoke(cli, ["export", "nobody", "-o", str(tmp_path / "x.json")])
    assert isinstance(done.exception, PgxInputError) and "no twin for patient 'nobody'" in str(done.exception)
    assert not (tmp_path / "x.json").exists()


def test_a_draft_order_reads_like_an_imported_medication() -> None:
    """One reader of medication resources: a CDS draft order and an imported MedicationRequest with
    the same dosage give the same drug, dose and interval."""
    dosage = [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]
    resource = medication_request("m-1", "309362", "Clopidogrel 75 MG Oral Tablet", "2025-01-01",
                                  dosageInstruction=dosage)
    draft = read_order(resource | {"status": "draft"})
    assert draft is not None and (draft.drugs, draft.dose_mg, draft.interval_h) == (("clopidogrel",), 75.0, 24.0)
    (fact,) = facts_from_resources([resource]).medications
    assert (fact.event.drug, fact.event.dose, fact.event.interval_h) == ("clopidogrel", 75.0, 24.0)


def test_patient_without_id_in_a_transaction_bundle_takes_its_full_url() -> None:
    doc = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5c4b6a2e-1d9e-4a53-8f4f-0b1d2c3e4f50",
         "resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100",
         "resource": quantity_obs("w1", "29463-7", 80, "kg", "2024-01-01")
         | {"subject": {"reference": "urn:uuid:5c4b6a2e-1d9e-4a53-8f4f-0b1d2c3e4f50"}}}]}
    facts = facts_from_resources(resources_in(doc))
    assert facts.patient_id == "5c4b6a2e-1d9e-4a53-8f4f-0b1d2c3e4f50"
    assert len(facts.covariates) == 1 and not facts.skipped


def test_ig1_metabolism_component_is_read_as_a_phenotype() -> None:
    old = {"resourceType": "Observation", "id": "imp-v1", "status": "final", "subject": SUBJECT,
           "meta": {"profile": ["http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/therapeutic-implication"]},
           "code": {"coding": [{"system": LOINC, "code": "51969-4"}]},
           "component": [{"code": {"coding": [{"system": LOINC, "code": "53040-2"}]},
                          "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA10317-8"}]}},
                         {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                          "valueCodeableConcept": {"coding": [{"code": "HGNC:2625", "display": "CYP2D6"}]}}]}
    state = plan_import(facts_from_resources([patient(), old]), TwinState.empty(PID)).state
    assert state.genotype.outside_calls["CYP2D6"].phenotype == "Intermediate Metabolizer"


def test_one_bundle_is_all_or_nothing(tmp_path: Path) -> None:
    def crash() -> None:
        raise RuntimeError("crash before commit")

    bundle = tacrolimus_bundle()
    with TwinStore(f"sqlite:///{tmp_path / 'crash.db'}", before_commit=crash) as crashing:
        with pytest.raises(RuntimeError):
            import_document(crashing, bundle, actor="tester")
    with TwinStore(f"sqlite:///{tmp_path / 'crash.db'}") as store:
        assert store.current_version(PID) == 0  # created, but none of the 8 facts written
        assert len(import_document(store, bundle, actor="tester").imported) == 8


def test_an_imported_hla_carrier_flags_carbamazepine() -> None:
    # "HLA-B*15:02 positive" arrives without a partner allele: the twin's evaluation must still see it
    from pgxtwin.twin.workflow import evaluations

    resources = [r for doc in load_many("genomics-reporting-3.0.0/[OPT]*.json") for r in resources_in(doc)]
    state = plan_import(facts_from_resources(resources), TwinState.empty("CGPatientExample01")).state
    (evaluation, _, _), = evaluations(state, [("carbamazepine", "200 mg", 12.0)])
    assert any("15:02" in risk for risk in evaluation.genotype_risks)
    assert evaluation.verdict == "avoid"
