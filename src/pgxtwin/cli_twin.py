"""``pgxtwin twin ...``: the patient twin over the store (``PGXTWIN_DATABASE_URL`` or the default
SQLite file ``./pgxtwin-data/pgxtwin.db``).  Every change is an event and a new version.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .knowledge.drugs import resolve_drug
from .cli_common import AgeOpt, HeightOpt, JsonOpt, SexOpt, WeightOpt, fail, out_console
from .errors import PgxInputError
from .twin import workflow

twin_app = typer.Typer(no_args_is_help=True, help="The patient twin: versioned state in the store.")
PatientArg = Annotated[str, typer.Argument(help="the patient's id in the EHR (FHIR Patient id)")]


def _store():
    from .store import TwinStore

    return TwinStore(entry_point="cli")


def _when(text: Optional[str], option: str) -> datetime:
    if text is None:
        return workflow.now()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise PgxInputError(f"{option} {text!r}: expected an ISO date-time such as 2026-11-26T08:00:00+00:00") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _write(patient_id: str, events: list[dict[str, Any]], *, create: bool = False):
    """Validate every event against the twin in memory, then append them (nothing half-written
    on a user's mistake; a concurrent writer is refused by the version check)."""
    from .store.errors import StoreError

    store = _store()
    try:
        state = store.create_twin(patient_id) if create else store.state_at(patient_id)
        parsed = workflow.validate_events(state, events)
        return store.append_all(patient_id, parsed, state.version) if parsed else state
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()


@twin_app.command("create")
def create(
    patient_id: Annotated[str, typer.Option("--patient-id", help="EHR/FHIR Patient id")],
    vcf: Annotated[Optional[Path], typer.Option(help="germline VCF to call")] = None,
    call: Annotated[Optional[Path], typer.Option(help="pgxtwin call JSON result instead of a VCF")] = None,
    outside_calls: Annotated[Optional[Path], typer.Option("--outside-calls", help="TSV: gene, diplotype [, phenotype]")] = None,
    sample: Annotated[Optional[str], typer.Option(help="sample of a multi-sample VCF")] = None,
    assembly: Annotated[str, typer.Option(help="GRCh38 or GRCh37")] = "GRCh38",
    sex: SexOpt = None,
    age: AgeOpt = None,
    weight: WeightOpt = None,
    height: HeightOpt = None,
    creatinine: Annotated[Optional[float], typer.Option(help="serum creatinine, mg/dL")] = None,
) -> None:
    """Create the twin of a patient, optionally with genotype and covariates."""
    from .genomics.caller import call_vcf
    from .genomics.outside_calls import outside_gene_result, read_outside_calls
    from .genomics.result import read_call_result

    if vcf is not None and call is not None:
        fail("give --vcf or --call, not both")
    now = workflow.now()
    events: list[dict[str, Any]] = []
    if sex is not None or age is not None:
        demo: dict[str, Any] = {"type": "demographics_set"}
        if sex is not None:
            demo["sex"] = sex.upper()
        if age is not None:
            demo |= {"age_years": age, "age_recorded_at": now.isoformat()}
        events.append(demo)
    outside = read_outside_calls(outside_calls) if outside_calls is not None else []
    result = None
    if vcf is not None:
        result = next(call_vcf(vcf, assembly=assembly, sample=sample, outside_calls=outside))
    elif call is not None:
        result = read_call_result(call)
    if result is not None:
        extra = {c.gene: outside_gene_result(c, assembly).model_dump(mode="json") for c in outside} if call is not None else {}
        events.append({"type": "genotype_set", "call_result": result.model_dump(mode="json"), "outside_calls": extra,
                       "recorded_at": now.isoformat()})
    for name, value, unit in (("weight", weight, "kg"), ("height", height, "cm"), ("serum_creatinine", creatinine, "mg/dL")):
        if value is not None:
            events.append({"type": "covariate_recorded", "covariate": name, "value": value, "unit": unit, "time": now.isoformat()})
    state = _write(patient_id, events, create=True)
    out_console.print(f"twin {state.patient_id} created at version {state.version}")


@twin_app.command("show")
def show(patient_id: PatientArg, version: Annotated[Optional[int], typer.Option(help="a past version")] = None,
         as_json: JsonOpt = False) -> None:
    """The twin as it is now, or as it was at ``--version``."""
    from .store.errors import StoreError

    store = _store()
    try:
        state = store.state_at(patient_id, version)
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()
    if as_json:
        sys.stdout.write(state.model_dump_json() + "\n")
        return
    snap = state.covariates_at(workflow.now())
    out_console.print(f"[bold]twin {state.patient_id}[/] version {state.version}: sex {snap.sex or '?'}, age"
                      f" {'?' if snap.age_years is None else f'{snap.age_years:.0f}'}, weight {snap.weight_kg or '?'} kg,"
                      f" CrCL {'?' if snap.crcl_ml_min is None else f'{snap.crcl_ml_min:.0f} mL/min'}")
    genes = Table(title="genotype", title_justify="left")
    for column in ("Gene", "Status", "Diplotype", "Phenotype"):
        genes.add_column(column)
    for gene, res in state.genotype.genes.items():
        if res.phenotype != "n/a" or res.status == "outside_call":
            genes.add_row(gene, res.status, ", ".join(res.diplotypes[:2]) or "-", res.phenotype)
    out_console.print(genes)
    for med in state.medications.values():
        regimen = med.regimen[-1] if med.regimen else None
        dose = f"{regimen.dose_mg:g} mg every {regimen.interval_h:g} h" if regimen and regimen.dose_mg and regimen.interval_h else "-"
        out_console.print(f"medication {med.drug}: {dose}, {len(med.doses)} doses recorded"
                          + ("" if med.current else f" (stopped {med.stopped_at:%Y-%m-%d})"))
    for obs in state.concentrations():
        out_console.print(f"level {obs.drug}: {obs.value if not obs.blq else '<' + str(obs.lloq)} mg/L at {obs.time.isoformat()}")


@twin_app.command("history")
def history(patient_id: PatientArg) -> None:
    """Every version of the twin with the event that made it."""
    from .store.errors import StoreError

    store = _store()
    try:
        entries = store.history(patient_id)
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()
    table = Table(title=f"twin {patient_id}: {len(entries)} versions", title_justify="left")
    for column in ("Version", "When", "Who", "Event"):
        table.add_column(column)
    for entry in entries:
        table.add_row(str(entry.version), entry.created_at.isoformat(timespec="seconds"), entry.actor, entry.summary)
    out_console.print(table)


@twin_app.command("medicate")
def medicate(
    patient_id: PatientArg,
    drug: Annotated[str, typer.Option(help="drug name")],
    dose: Annotated[str, typer.Option(help="e.g. '75 mg'")],
    every: Annotated[str, typer.Option(help="dosing interval, e.g. 24h")] = "24h",
    start: Annotated[Optional[str], typer.Option(help="first dose, ISO date-time (default now)")] = None,
    given: Annotated[int, typer.Option(help="doses already administered, recorded from --start")] = 0,
) -> None:
    """Start a medication (and record the doses already given)."""
    from .pk.drug_model import drug_model
    from .pk.scenarios import parse_every, resolve_dose_mg

    name = resolve_drug(drug)
    tau = parse_every(every)
    amount = resolve_dose_mg(drug_model(name), dose, _patient_now(patient_id))
    first = _when(start, "--start")
    if given < 0:
        fail("--given must not be negative")
    med_id = f"{name}-{first:%Y%m%dT%H%M}"
    events: list[dict[str, Any]] = [{"type": "medication_started", "medication_id": med_id, "drug": name,
                                     "time": first.isoformat(), "dose": amount, "interval_h": tau}]
    for k in range(given):
        events.append({"type": "dose_recorded", "medication_id": med_id,
                       "time": (first + timedelta(hours=k * tau)).isoformat(), "amount": amount})
    state = _write(patient_id, events)
    out_console.print(f"{name} started ({given} doses recorded): twin {patient_id} at version {state.version}")


@twin_app.command("observe")
def observe(
    patient_id: PatientArg,
    drug: Annotated[str, typer.Option(help="drug name")],
    concentration: Annotated[Optional[float], typer.Option(help="measured level")] = None,
    unit: Annotated[str, typer.Option(help="unit of the level, e.g. mg/L, ng/mL")] = "mg/L",
    time: Annotated[Optional[str], typer.Option(help="sample time, ISO date-time")] = None,
    hours_after_first_dose: Annotated[Optional[float], typer.Option(help="sample time relative to the first dose")] = None,
    blq: Annotated[bool, typer.Option(help="below the limit of quantification")] = False,
    lloq: Annotated[Optional[float], typer.Option(help="limit of quantification (same unit)")] = None,
) -> None:
    """Record a measured drug level."""
    name = resolve_drug(drug)
    if hours_after_first_dose is not None:
        state = _read(patient_id)
        first = state.first_dose_time(name)
        if first is None:
            fail(f"--hours-after-first-dose: no dose of {name} is recorded for twin {patient_id}")
        when = first + timedelta(hours=hours_after_first_dose)  # type: ignore[operator]
    else:
        when = _when(time, "--time")
    observation: dict[str, Any] = {"kind": "concentration", "drug": name, "time": when.isoformat(), "unit": unit, "blq": blq}
    if concentration is not None:
        observation["value"] = concentration
    if lloq is not None:
        observation["lloq"] = lloq
    state = _write(patient_id, [{"type": "observation_recorded", "observation": observation}])
    out_console.print(f"level recorded: twin {patient_id} at version {state.version}")
    _record_estimate(patient_id, state, name)


def _record_estimate(patient_id: str, state, drug: str) -> None:
    """Re-estimate the drug's individual posterior from all levels: an event and a new version."""
    try:
        event, posterior = workflow.estimate_event(state, drug)
    except PgxInputError as exc:
        out_console.print(f"[yellow]not individualised:[/] {exc}", highlight=False)
        return
    if event is None:
        return
    state = _write(patient_id, [event])
    cl = posterior.parameters.get("cl") or next(iter(posterior.parameters.values()))
    out_console.print(f"re-estimated from {posterior.n_observations} level(s): twin {patient_id} at version {state.version}"
                      f" (estimate {cl.estimate:.4g}, 90% interval {cl.p05:.4g}-{cl.p95:.4g})")


def _read(patient_id: str):
    from .store.errors import StoreError

    store = _store()
    try:
        return store.state_at(patient_id)
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()


def _patient_now(patient_id: str):
    return _read(patient_id).patient_factors(workflow.now())


@twin_app.command("evaluate")
def evaluate_twin(
    patient_id: PatientArg,
    drug: Annotated[Optional[str], typer.Option(help="a new prescription to check (default: current medications)")] = None,
    dose: Annotated[Optional[str], typer.Option(help="dose of the new prescription")] = None,
    every: Annotated[str, typer.Option(help="interval of the new prescription")] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate the twin's medications (or a new prescription): one verdict each."""
    from .pk.scenarios import parse_every

    state = _read(patient_id)
    if drug is not None:
        if dose is None:
            fail("--dose is required with --drug")
        todo = [(resolve_drug(drug), dose, parse_every(every))]
    else:
        todo = workflow.current_regimens(state)
        if not todo:
            fail(f"twin {patient_id} has no current medication with a regimen; give --drug and --dose")
    results = [(ev, notes) for ev, notes, _ in workflow.evaluations(state, todo)]
    if as_json:
        sys.stdout.write(json.dumps([ev.as_dict() | {"notes": notes} for ev, notes in results], default=float) + "\n")
        return
    for ev, notes in results:
        out_console.print(f"[bold]{ev.drug}[/] {ev.dose_mg:g} mg every {ev.interval_h:g} h: [bold]{ev.verdict}[/]")
        for reason in [*notes, *ev.reasons]:
            out_console.print(f"  - {reason}", highlight=False)


@twin_app.command("recommend")
def recommend(patient_id: PatientArg, drug: Annotated[str, typer.Option(help="drug name")], as_json: JsonOpt = False) -> None:
    """The regimen with the highest probability of target attainment for this patient."""
    name = resolve_drug(drug)
    state = _read(patient_id)
    choice, notes = workflow.recommend(state, name)
    if as_json:
        sys.stdout.write(json.dumps(choice.as_dict() | {"notes": notes}, default=float) + "\n")
        return
    best = choice.best
    out_console.print(f"[bold]{name}[/]: {best.dose_mg:g} mg every {best.interval_h:g} h,"
                      f" probability of target attainment {best.pta:.0%} ({choice.target.description})")
    for note in notes:
        out_console.print(f"  - {note}")


def write_report(patient_id: str, output: Path, plots: Optional[Path]) -> None:
    """The twin's self-contained HTML report (and PNG plots when ``plots`` is a folder)."""
    from .knowledge.version import knowledge_base_version
    from .report.html import export_plot_png, write_twin_report
    from .report.twin import report_inputs

    state = _read(patient_id)
    evaluations, curves = report_inputs(state)
    write_twin_report(output, state, evaluations=evaluations, curves=curves,
                      kb_version=knowledge_base_version())
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        for drug, curve in curves.items():
            export_plot_png(curve, plots / f"{drug}.png")
    out_console.print(f"report written to {output}")
