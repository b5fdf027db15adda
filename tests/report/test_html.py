"""The self-contained HTML twin report: built from a real twin (events folded), real genotype
calls, real evaluations and real simulations."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pgxtwin.genomics.caller import call_vcf
from pgxtwin.genomics.outside_calls import OutsideCall, outside_gene_result
from pgxtwin.knowledge.version import knowledge_base_version
from pgxtwin.pk.scenarios import simulate_regimen
from pgxtwin.report.html import (
    CurveData,
    curve_from_simulation,
    export_plot_png,
    render_twin_report,
    write_twin_report,
)
from pgxtwin.twin.evaluate import evaluate_prescription
from pgxtwin.twin.state import (
    Concentration,
    CovariateRecorded,
    DemographicsSet,
    DoseRecorded,
    GenotypeSet,
    MedicationStarted,
    ObservationRecorded,
    OutsideCallSet,
    TwinState,
    fold,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_VCF = ROOT / "examples" / "demo_patient.vcf"
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
NOW = datetime(2024, 3, 6, 12, 0, tzinfo=timezone.utc)
NASTY_NOTE = "<script>alert(\"x\")</script> & 'quoted' <b>bold</b>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# drug -> (dose, interval h, days given)
REGIMENS = {"clopidogrel": ("75 mg", 24.0, 5), "codeine": ("30 mg", 6.0, 2), "celecoxib": ("200 mg", 12.0, 3),
            "paroxetine": ("20 mg", 24.0, 5)}
DPYD_NO_CALLS = 3


def _partial_vcf(folder: Path) -> Path:
    """The demo VCF with three DPYD positions turned into no-calls (a real 'partial' call)."""
    out, n = [], 0
    for line in DEMO_VCF.read_text().splitlines(keepends=True):
        fields = line.split("\t")
        if not line.startswith("#") and fields[0] == "chr1" and 97_000_000 < int(fields[1]) < 98_000_000 \
                and n < DPYD_NO_CALLS:
            line, n = line.rstrip("\n").rsplit("\t", 1)[0] + "\t./.\n", n + 1
        out.append(line)
    assert n == DPYD_NO_CALLS
    path = folder / "partial.vcf"
    path.write_text("".join(out))
    return path


def _events(call_result) -> list:
    cyp2d6 = outside_gene_result(OutsideCall("CYP2D6", "*1/*4", None, "CNV-aware caller"))
    cyp2d6 = cyp2d6.model_copy(update={"notes": [*cyp2d6.notes, NASTY_NOTE]})
    events = [
        DemographicsSet(sex="F", age_years=67, age_recorded_at=T0),
        CovariateRecorded(covariate="weight", value=72, unit="kg", time=T0),
        CovariateRecorded(covariate="serum_creatinine", value=97, unit="µmol/L", time=T0),
        GenotypeSet(call_result=call_result, recorded_at=T0),
        OutsideCallSet(gene="CYP2D6", result=cyp2d6, recorded_at=T0),
    ]
    for drug, (dose, tau, days) in REGIMENS.items():
        mg = float(dose.split()[0])
        events.append(MedicationStarted(medication_id=f"m-{drug}", drug=drug, time=T0, dose=mg, interval_h=tau))
        for k in range(int(days * 24 / tau)):
            events.append(DoseRecorded(dose_id=f"d-{drug}-{k}", medication_id=f"m-{drug}", time=T0 + k * tau * H,
                                       amount=mg))
    events.append(ObservationRecorded(observation=Concentration(
        observation_id="lvl-1", drug="celecoxib", time=T0 + 59 * H, value=0.45, unit="mg/L")))
    return events


def _curve(state: TwinState, ev, days: float) -> CurveData:
    dose, tau, _ = REGIMENS[ev.drug]
    origin = state.first_dose_time(ev.drug)
    patient = state.patient_factors(origin + H)
    sim = simulate_regimen(ev.drug, patient, dose=dose, every_h=tau, days=days, n=200, seed=3)
    target = ev.exposure.target
    levels = [c for c in state.concentrations(ev.drug) if (c.analyte or ev.drug) == target.analyte]
    return curve_from_simulation(
        sim, target.analyte, window=(target.low, target.high), window_label=f"target ({target.metric})",
        observed_times=[(c.time - origin) / H for c in levels], observed_values=[c.value for c in levels],
        dose_times=[(d.time - origin) / H for d in state.doses_of(ev.drug)],
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    call_result = next(iter(call_vcf(_partial_vcf(tmp_path_factory.mktemp("vcf")))))
    state = fold("pat-report-1", _events(call_result))
    patient = state.patient_factors(T0 + H)
    evaluations = [evaluate_prescription(drug, dose, tau, patient, n=100)
                   for drug, (dose, tau, _) in REGIMENS.items()]
    curves = {ev.drug: _curve(state, ev, REGIMENS[ev.drug][2]) for ev in evaluations if ev.exposure is not None}
    return state, evaluations, curves


@pytest.fixture(scope="module")
def html_text(inputs) -> str:
    state, evaluations, curves = inputs
    return render_twin_report(state, evaluations=evaluations, curves=curves, kb_version=knowledge_base_version(),
                              generated_at=NOW)


class _StrictParser(HTMLParser):
    """html.parser is lenient: also check that every non-void element is closed in order."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"] or "")
        if tag == "a":
            self.hrefs.append(attrs.get("href") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _StrictParser:
    parser = _StrictParser()
    parser.feed(text)
    parser.close()
    return parser


def _visible(text: str) -> str:
    return " ".join("".join(_parse(text).text).split())


# --- the evaluations the report is built from are the expected ones

def test_inputs_cover_every_verdict_and_phenoconversion(inputs) -> None:
    state, evaluations, curves = inputs
    verdicts = {ev.drug: ev.verdict for ev in evaluations}
    assert verdicts["clopidogrel"] == "avoid" and verdicts["codeine"] == "avoid"
    assert verdicts["paroxetine"] == "adjust_dose" and verdicts["celecoxib"] == "ok"
    assert state.genotype.genes["DPYD"].status == "partial"
    assert set(curves) == {"clopidogrel", "codeine", "celecoxib"}


# --- self-contained and well formed

def test_report_parses_and_loads_nothing_from_outside(html_text) -> None:
    parser = _parse(html_text)
    assert parser.errors == []
    assert parser.stack == []
    lowered = html_text.lower()
    assert "<script" not in lowered
    assert "<link" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    assert "<iframe" not in lowered and "<object" not in lowered
    assert all("http" not in src for src in parser.srcs)
    assert not re.search(r"src\s*=\s*[\"']?\s*https?:", html_text, re.I)
    assert parser.tags.count("img") == 3


def test_every_image_is_an_embedded_png(html_text) -> None:
    import matplotlib.image

    srcs = _parse(html_text).srcs
    assert srcs
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data.startswith(PNG_MAGIC)
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 500


# --- content

def test_verdicts_genes_and_patient_header_appear(html_text) -> None:
    text = _visible(html_text)
    for label in ("AVOID", "ADJUST DOSE", "OK"):
        assert label in text
    for gene in ("CYP2C19", "CYP2D6", "CYP2C9", "DPYD", "TPMT", "SLCO1B1"):
        assert gene in text
    for drug in REGIMENS:
        assert drug in text
    assert "pat-report-1" in text and "female" in text and "72.0 kg" in text
    assert "Cockcroft–Gault" in text and "CKD-EPI 2021" in text
    assert knowledge_base_version()["version"] in text
    assert "2024-03-06T12:00:00+00:00" in text  # generated-at


def test_summary_lists_avoid_before_adjust_dose_and_omits_ok(html_text) -> None:
    summary = re.search(r'<section class="summary".*?</section>', html_text, re.S).group(0)
    positions = {drug: summary.find(f"<strong>{drug}</strong>") for drug in REGIMENS}
    assert positions["celecoxib"] == -1  # ok: only in the "no action" line
    assert -1 < positions["clopidogrel"] < positions["paroxetine"]
    assert -1 < positions["codeine"] < positions["paroxetine"]
    assert "No pharmacogenomic action for: celecoxib" in _visible(summary)
    assert "paroxetine 20 mg every 24 h" in _visible(summary)  # not in the library: the prescribed regimen


def test_cpic_text_guideline_link_exposure_and_phenoconversion(inputs, html_text) -> None:
    _, evaluations, _ = inputs
    clopidogrel = next(ev for ev in evaluations if ev.drug == "clopidogrel")
    text = _visible(html_text)
    assert clopidogrel.recommendation.text in text
    url = clopidogrel.recommendation.guideline.url
    assert url in _parse(html_text).hrefs
    pta = f"{clopidogrel.exposure.probability_of_target_attainment:.0%}"
    assert re.search(rf"Probability of target attainment</th><td>{pta}</td>", html_text)
    # the reasons do not repeat the CPIC text already shown in the recommendation box
    assert text.count(clopidogrel.recommendation.text) == 2  # the summary and the CPIC box
    phen = re.search(r'<section id="phenotypes">.*?</section>', html_text, re.S).group(0)
    row = next(r for r in re.findall(r"<tr[^>]*>.*?</tr>", phen, re.S) if "CYP2D6" in r and "codeine" in r)
    assert 'class="flag"' in row
    assert "Intermediate Metabolizer" in row and "Poor Metabolizer" in row and "paroxetine" in row
    codeine = re.search(r'<article[^>]*id="med-codeine".*?</article>', html_text, re.S).group(0)
    assert "CYP2D6: genotype Intermediate Metabolizer, phenoconverted by paroxetine" in _visible(codeine)
    paroxetine = re.search(r'<article[^>]*id="med-paroxetine".*?</article>', html_text, re.S).group(0)
    assert "population model" not in paroxetine  # not in the drug library: no model behind it


def test_missing_positions_are_counted_and_listed(html_text) -> None:
    genotype = re.search(r'<section id="genotype">.*?</section>', html_text, re.S).group(0)
    row = next(r for r in re.findall(r"<tr>.*?</tr>", genotype, re.S) if "<strong>DPYD</strong>" in r)
    assert "partial" in row
    assert f"<details><summary>{DPYD_NO_CALLS} missing</summary>" in row
    assert "1:97078987 (rs114096998)" in row


def test_text_is_escaped(html_text) -> None:
    assert NASTY_NOTE not in html_text
    assert "<b>bold</b>" not in html_text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quoted&#x27;" in html_text
    assert NASTY_NOTE in _visible(html_text)  # shown to the reader as typed


def test_only_http_links_become_hrefs(inputs) -> None:
    state, evaluations, curves = inputs
    ev = next(e for e in evaluations if e.drug == "clopidogrel")
    rec = ev.recommendation
    bad = dataclasses.replace(ev, recommendation=dataclasses.replace(
        rec, guideline=dataclasses.replace(rec.guideline, url="javascript:alert(1)")))
    text = render_twin_report(state, evaluations=[bad], curves={}, kb_version={"version": "x"}, generated_at=NOW)
    assert all(not h.lower().startswith("javascript") for h in _parse(text).hrefs)
    # the other active medications are listed as not evaluated
    assert "NOT EVALUATED" in _visible(text)


# --- files

def test_write_is_atomic_and_leaves_no_temporary_files(inputs, tmp_path, monkeypatch) -> None:
    state, evaluations, curves = inputs
    target = tmp_path / "report.html"
    kwargs = dict(evaluations=evaluations, curves=curves, kb_version=knowledge_base_version(), generated_at=NOW)
    assert write_twin_report(target, state, **kwargs) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    first = target.read_text(encoding="utf-8")
    assert first.startswith("<!DOCTYPE html>") and _parse(first).errors == []

    # a failing replace leaves the previous report intact and no temporary file behind
    import pgxtwin.report.html as module

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(module.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_twin_report(target, state, **{**kwargs, "generated_at": NOW + H})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.read_text(encoding="utf-8") == first


def test_plots_export_as_png_files(inputs, tmp_path) -> None:
    _, _, curves = inputs
    out = export_plot_png(curves["clopidogrel"], tmp_path / "clopidogrel.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clopidogrel.png"]


def test_curve_data_is_checked() -> None:
    with pytest.raises(ValueError, match="median has 2 values for 3 times"):
        CurveData("x", "x", [0, 1, 2], [1, 2], None, None, None, None, [], [], [])
    with pytest.raises(ValueError, match="observed times"):
        CurveData("x", "x", [0, 1], [1, 2], None, None, None, None, [1.0], [], [])
    curve = CurveData("x", "x", [0, 1], [1, 2], None, None, 0.5, float("inf"), [], [], [0.0])
    assert curve.window_high is None and isinstance(curve.time_h, np.ndarray)


# --- optional: how it looks in a real browser (skipped without Chromium)

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed")
def test_renders_in_headless_chromium(inputs, tmp_path) -> None:
    state, evaluations, curves = inputs
    report = write_twin_report(tmp_path / "report.html", state, evaluations=evaluations, curves=curves,
                               kb_version=knowledge_base_version(), generated_at=NOW)
    shot = tmp_path / "shot.png"
    args = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
            report.as_uri()]
    try:
        subprocess.run(args, check=True, capture_output=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Chromium could not take a screenshot here: {exc}")
    assert shot.read_bytes().startswith(PNG_MAGIC)
