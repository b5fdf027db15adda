"""``pgxtwin import BUNDLE.json`` and ``pgxtwin export PATIENT -o BUNDLE.json``: FHIR R4 in and out of
the twin store (``PGXTWIN_DATABASE_URL`` or ``./pgxtwin-data/pgxtwin.db``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_common import JsonOpt, out_console
from .errors import PgxInputError

ENTRY_POINT = "cli"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PgxInputError(f"cannot read ({exc.strerror or exc})", source=str(path)) from None
    except UnicodeDecodeError:
        raise PgxInputError("not UTF-8 text", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise PgxInputError(f"not JSON: {exc.msg}", source=str(path), line=exc.lineno) from None


def import_bundle(
    path: Annotated[Path, typer.Argument(help="FHIR R4 Bundle (or Parameters, or one resource), JSON")],
    patient_id: Annotated[Optional[str], typer.Option("--patient-id", help="import into this twin instead of the "
                                                      "Bundle's Patient.id")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a FHIR Bundle into the patient's twin (created when absent); says what was skipped and why."""
    from .api.fhir.bundle_import import import_document
    from .store import TwinStore
    from .store.errors import StoreError

    document = _read_json(path)
    store = TwinStore(entry_point=ENTRY_POINT)
    try:
        report = import_document(store, document, entry_point=ENTRY_POINT, patient_id=patient_id)
    except PgxInputError as exc:
        raise PgxInputError(str(exc), source=str(path)) from None
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(report.operation_outcome()) + "\n")
        return
    out_console.print(report.summary(), highlight=False, soft_wrap=True)
    for note in report.grouped():
        style = "yellow" if note.severity == "warning" else "dim"
        out_console.print(f"  [{style}]{note.severity}[/] {note.source}: {note.message}", highlight=False,
                          soft_wrap=True)


def export(
    patient_id: Annotated[str, typer.Argument(help="the twin's patient id (FHIR Patient id)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle JSON file to write")],
) -> None:
    """Export the twin's PGx results as Genomics Reporting IG resources in a FHIR R4 Bundle."""
    from .api.fhir.export import export_bundle
    from .atomic import atomic_write
    from .store import TwinStore
    from .store.errors import StoreError

    store = TwinStore(entry_point=ENTRY_POINT)
    try:
        state = store.state_at(patient_id)
        bundle = export_bundle(state)
        store.audit(patient_id, "fhir_export", version=state.version, detail=f"{len(bundle['entry'])} resources")
    except StoreError as exc:
        raise PgxInputError(str(exc)) from None
    finally:
        store.close()
    try:
        atomic_write(output, json.dumps(bundle, indent=2) + "\n")
    except OSError as exc:
        raise PgxInputError(f"cannot write ({exc.strerror or exc})", source=str(output)) from None
    out_console.print(f"{len(bundle['entry'])} resources of twin {patient_id} (version {state.version}) written to {output}")
