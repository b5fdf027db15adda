"""One self-contained HTML report of a patient's twin, for a clinical pharmacist.

The file loads nothing: CSS is inline and plots are PNG data URIs (matplotlib, Agg, through the
object API so no pyplot state is shared).  Every piece of text from the twin, the knowledge base or
the evaluations is escaped with :func:`html.escape`; guideline links are plain ``<a href>`` with an
http(s) scheme only.

Layout: patient header, a summary of actionable findings (avoid, then adjust_dose, then
insufficient_data), one card per active medication (verdict, reasons, CPIC recommendation,
predicted exposure vs target, suggested regimen, concentration-time plot), phenotypes by
genotype vs after co-medications (phenoconversion), the genotype table, versions.

Units as in the twin: mg, h, mg/L (small concentrations are also shown in µg/L).
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write

if TYPE_CHECKING:
    from ..genomics.result import GeneResult
    from ..pk.scenarios import Simulation
    from ..twin.evaluate import Evaluation
    from ..twin.state import Medication, TwinState

__all__ = ["CurveData", "curve_from_simulation", "export_plot_png", "render_twin_report", "write_twin_report"]

SEVERITY: dict[str, int] = {"avoid": 0, "adjust_dose": 1, "insufficient_data": 2, "ok": 3}
VERDICT_LABEL = {"avoid": "AVOID", "adjust_dose": "ADJUST DOSE", "insufficient_data": "INSUFFICIENT DATA", "ok": "OK"}
UNKNOWN_PHENOTYPES = ("n/a", "", None)
PLOT_DPI = 110
SMALL_MG_PER_L = 0.1  # below this peak, plots and values are (also) given in µg/L


# ---------------------------------------------------------------------------------------------
# curve data and plots


def _floats(values: Any) -> np.ndarray:
    return np.asarray([] if values is None else values, dtype=float).reshape(-1)


@dataclass(frozen=True)
class CurveData:
    """One analyte's predicted concentration-time course (mg/L, h since the first dose).

    ``p05``/``p95`` may be None (a typical-patient curve, no band); ``window_low``/``window_high``
    None where the window has no bound (both None: no window).  ``window_label`` names the band
    (e.g. "target css_avg"); ``source`` says where the prediction comes from (prior, posterior).
    """

    drug: str
    analyte: str
    time_h: Any
    median: Any
    p05: Any = None
    p95: Any = None
    window_low: float | None = None
    window_high: float | None = None
    observed_times: Any = ()
    observed_values: Any = ()
    dose_times: Any = ()
    window_label: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        time_h = _floats(self.time_h)
        if time_h.size == 0:
            raise ValueError(f"CurveData {self.drug}: time_h is empty")
        set_(self, "time_h", time_h)
        for name in ("median", "p05", "p95"):
            value = getattr(self, name)
            if value is None and name != "median":
                continue
            arr = _floats(value)
            if arr.shape != time_h.shape:
                raise ValueError(f"CurveData {self.drug}: {name} has {arr.size} values for {time_h.size} times")
            set_(self, name, arr)
        if (self.p05 is None) != (self.p95 is None):
            raise ValueError(f"CurveData {self.drug}: give both p05 and p95 or neither")
        obs_t, obs_v = _floats(self.observed_times), _floats(self.observed_values)
        if obs_t.shape != obs_v.shape:
            raise ValueError(f"CurveData {self.drug}: {obs_t.size} observed times for {obs_v.size} values")
        set_(self, "observed_times", obs_t)
        set_(self, "observed_values", obs_v)
        set_(self, "dose_times", _floats(self.dose_times))
        for name in ("window_low", "window_high"):
            value = getattr(self, name)
            if value is not None:
                value = float(value)
                set_(self, name, None if math.isinf(value) else value)


def curve_from_simulation(
    sim: Simulation,
    analyte: str | None = None,
    *,
    window: tuple[float | None, float | None] | None = None,
    window_label: str | None = None,
    observed_times: Sequence[float] = (),
    observed_values: Sequence[float] = (),
    dose_times: Sequence[float] = (),
    source: str | None = None,
) -> CurveData:
    """A :class:`CurveData` from :func:`pgxtwin.pk.scenarios.simulate_regimen` (5th/50th/95th percentiles).

    ``window`` defaults to the drug library's therapeutic window when it is in mg/L and for this analyte."""
    name = analyte or next(iter(sim.curves))
    if name not in sim.curves:
        raise ValueError(f"{sim.drug}: no analyte {name!r} in the simulation (has {', '.join(sim.curves)})")
    curve = np.asarray(sim.curves[name], dtype=float)
    if curve.ndim == 1:
        curve = curve[None, :]
    if window is None:
        from ..knowledge.drugs import load_drug

        lib = load_drug(sim.drug).therapeutic_window
        if lib is not None and lib.unit == "mg/L" and lib.analyte in (None, name) and name == next(iter(sim.curves)):
            window = (lib.low, lib.high)
            window_label = window_label or f"therapeutic window ({lib.metric})"
    low, high = window if window is not None else (None, None)
    if curve.shape[0] > 1:
        p05, median, p95 = np.quantile(curve, [0.05, 0.5, 0.95], axis=0)
    else:
        p05 = p95 = None
        median = curve[0]
    return CurveData(
        drug=sim.drug, analyte=name, time_h=sim.times_h, median=median, p05=p05, p95=p95,
        window_low=low, window_high=high, observed_times=observed_times, observed_values=observed_values,
        dose_times=dose_times, window_label=window_label,
        source=source or (f"population prediction, n={sim.n}" if sim.n > 1 else "typical patient"),
    )


def _unit_scale(curve: CurveData) -> tuple[float, str]:
    peaks = [np.nanmax(curve.median)]
    if curve.p95 is not None:
        peaks.append(np.nanmax(curve.p95))
    if curve.observed_values.size:
        peaks.append(np.nanmax(curve.observed_values))
    peaks.extend(v for v in (curve.window_low, curve.window_high) if v is not None)
    peak = max((p for p in peaks if np.isfinite(p)), default=0.0)
    return (1000.0, "µg/L") if 0 < peak < SMALL_MG_PER_L else (1.0, "mg/L")


def _plot_png(curve: CurveData) -> bytes:
    """The concentration-time plot as PNG bytes."""
    from matplotlib.figure import Figure

    scale, unit = _unit_scale(curve)
    fig = Figure(figsize=(9.2, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    t = curve.time_h
    ymax_data = np.nanmax(curve.p95 if curve.p95 is not None else curve.median) * scale
    if curve.observed_values.size:
        ymax_data = max(ymax_data, float(np.nanmax(curve.observed_values)) * scale)
    if curve.window_low is not None or curve.window_high is not None:
        low = (curve.window_low or 0.0) * scale
        high = curve.window_high * scale if curve.window_high is not None else max(ymax_data, low) * 1.15 + 1e-12
        ymax_data = max(ymax_data, high if curve.window_high is not None else low)
        ax.axhspan(low, high, color="#2e7d32", alpha=0.13, lw=0, label=curve.window_label or "therapeutic window")
    if curve.p05 is not None and curve.p95 is not None:
        ax.fill_between(t, curve.p05 * scale, curve.p95 * scale, color="#1565c0", alpha=0.22, lw=0,
                        label="90% prediction interval")
    ax.plot(t, curve.median * scale, color="#0d47a1", lw=1.8,
            label="individual prediction (median)" if curve.p05 is not None else "individual prediction")
    if curve.observed_values.size:
        ax.plot(curve.observed_times, curve.observed_values * scale, "o", color="#c62828", mec="black", ms=6,
                label="measured level", zorder=5)
    if curve.dose_times.size:
        ax.plot(curve.dose_times, np.zeros_like(curve.dose_times), linestyle="none", marker="|", ms=14, mew=1.6,
                color="#424242", transform=ax.get_xaxis_transform(), clip_on=False, label="dose", zorder=6)
    top = ymax_data * 1.12 if ymax_data > 0 else 1.0
    ax.set_ylim(0.0, top)
    ax.set_xlim(float(t[0]), float(t[-1]))
    ax.set_xlabel("time since first dose (h)")
    ax.set_ylabel(f"{curve.analyte} ({unit})")
    title = curve.drug if curve.analyte == curve.drug else f"{curve.drug}: {curve.analyte}"
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(alpha=0.3, lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return buf.getvalue()


def export_plot_png(curve: CurveData, path: str | os.PathLike[str]) -> Path:
    """Write ``curve``'s concentration-time plot as a PNG file (atomically)."""
    return atomic_write(path, _plot_png(curve))


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    v = float(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞"
    return f"{v:.{digits}g}"


def _score(value: float | None) -> str:
    """An activity score as CPIC writes it (1.0, 1.25, 0.5)."""
    if value is None or math.isnan(float(value)):
        return "—"
    v = float(value)
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def _conc(value: float | None) -> str:
    """A concentration in mg/L, with µg/L when small."""
    text = _num(value)
    if text in ("—", "∞"):
        return text
    v = float(value)  # type: ignore[arg-type]
    if 0 < abs(v) < SMALL_MG_PER_L:
        return f"{text} mg/L ({v * 1000:.3g} µg/L)"
    return f"{text} mg/L"


def _regimen(dose_mg: float | None, interval_h: float | None) -> str:
    dose = "dose not recorded" if dose_mg is None or math.isnan(dose_mg) else f"{dose_mg:g} mg"
    every = "" if interval_h is None or math.isnan(interval_h) else f" every {interval_h:g} h"
    return dose + every


def _prescribed(ev: Evaluation | None, med: Medication | None) -> str:
    """The evaluated regimen, else the medication's current prescribed one (drugs outside the library
    carry no evaluated dose)."""
    if ev is not None and not math.isnan(ev.dose_mg):
        return _regimen(ev.dose_mg, ev.interval_h)
    last = med.regimen[-1] if med is not None and med.regimen else None
    if last is not None and last.dose_mg is not None:
        return _regimen(last.dose_mg, last.interval_h)
    return _regimen(None, ev.interval_h if ev is not None else (last.interval_h if last else None))


def _badge(verdict: str) -> str:
    cls = verdict if verdict in SEVERITY else "unknown"
    return f'<span class="badge v-{_e(cls)}">{_e(VERDICT_LABEL.get(verdict, verdict))}</span>'


def _link(url: str | None) -> str:
    if not url:
        return ""
    if not url.lower().startswith(("https://", "http://")):
        return _e(url)
    return f'<a href="{_e(url)}" rel="noopener noreferrer">{_e(url)}</a>'


def _time(when: datetime | None) -> str:
    if when is None:
        return "—"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _list(items: Iterable[object], cls: str = "") -> str:
    items = [i for i in items if i not in (None, "")]
    if not items:
        return ""
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# ---------------------------------------------------------------------------------------------
# sections

CSS = """
:root { --avoid:#b71c1c; --adjust:#e65100; --insufficient:#455a64; --ok:#2e7d32; --line:#d0d7de; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:#1b1f23; margin:0 auto; max-width:1100px; padding:24px 28px 48px; line-height:1.45; font-size:15px; }
h1 { font-size:1.6em; margin:0 0 4px; }
h2 { font-size:1.25em; border-bottom:2px solid #1b1f23; padding-bottom:3px; margin:32px 0 12px; }
h3 { font-size:1.1em; margin:0; }
.sub { color:#57606a; margin:0 0 14px; }
dl.patient { display:grid; grid-template-columns: max-content 1fr max-content 1fr; gap:4px 16px; margin:0;
             padding:12px 16px; background:#f6f8fa; border:1px solid var(--line); border-radius:6px; }
dl.patient dt { font-weight:600; color:#57606a; }
dl.patient dd { margin:0; }
.summary { border:2px solid #1b1f23; border-radius:6px; padding:12px 18px; margin-top:18px; }
.summary h2 { border:0; margin:0 0 8px; }
.summary ol { padding-left:1.2em; margin:0; }
.summary li { margin:6px 0; }
.badge { display:inline-block; padding:2px 9px; border-radius:11px; color:#fff; font-weight:700;
         font-size:0.8em; letter-spacing:0.03em; vertical-align:middle; white-space:nowrap; }
.v-avoid { background:var(--avoid); } .v-adjust_dose { background:var(--adjust); }
.v-insufficient_data { background:var(--insufficient); } .v-ok { background:var(--ok); } .v-unknown { background:#6e7781; }
.med { border:1px solid var(--line); border-left:8px solid #6e7781; border-radius:6px; padding:12px 16px;
       margin:14px 0; page-break-inside:avoid; }
.med.s-avoid { border-left-color:var(--avoid); } .med.s-adjust_dose { border-left-color:var(--adjust); }
.med.s-insufficient_data { border-left-color:var(--insufficient); } .med.s-ok { border-left-color:var(--ok); }
.med header { display:flex; gap:12px; align-items:center; flex-wrap:wrap; margin-bottom:6px; }
.med h4 { font-size:0.95em; margin:12px 0 4px; color:#24292f; }
.med ul { margin:2px 0; padding-left:1.2em; }
td ul { margin:0; padding-left:1.1em; }
.cpic { background:#f6f8fa; border-left:3px solid #57606a; margin:4px 0; padding:6px 10px; }
.cpic p { margin:0 0 4px; }
table { border-collapse:collapse; width:100%; font-size:0.92em; margin:4px 0; }
th, td { border:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:#f6f8fa; }
td.num { text-align:right; white-space:nowrap; }
tr.flag td { background:#fff8e1; }
.status-partial, .status-ambiguous, .status-no_call { color:var(--adjust); font-weight:600; }
.status-outside_call { color:#1565c0; font-weight:600; }
figure { margin:10px 0 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { font-size:0.85em; color:#57606a; }
.muted { color:#57606a; } .warn { color:var(--avoid); font-weight:600; }
details summary { cursor:pointer; }
footer { margin-top:36px; font-size:0.88em; color:#57606a; }
footer table { font-size:1em; } code { font-size:0.92em; word-break:break-all; }
@media print { body { padding:0; font-size:12px; } .med { break-inside:avoid; } a { color:inherit; } }
"""


def _patient_header(state: TwinState, as_of: datetime, generated_at: datetime) -> str:
    snap = state.covariates_at(as_of)
    sex = {"F": "female", "M": "male"}.get(snap.sex or "", "not recorded")
    age = f"{snap.age_years:.0f} years" if snap.age_years is not None else "not recorded"
    weight = f"{snap.weight_kg:.1f} kg" if snap.weight_kg is not None else "not recorded"
    renal = []
    if snap.crcl_ml_min is not None:
        renal.append(f"CrCL {snap.crcl_ml_min:.0f} mL/min (Cockcroft–Gault)")
    if snap.egfr_ml_min_1_73m2 is not None:
        renal.append(f"eGFR {snap.egfr_ml_min_1_73m2:.0f} mL/min/1.73 m² (CKD-EPI 2021, race-free)")
    if not renal:
        need = "serum creatinine, age and sex" if snap.serum_creatinine_mg_dl is None else "age and sex (adult)"
        renal.append(f"not available (needs {need})")
    scr = (f"serum creatinine {snap.serum_creatinine_mg_dl:.2f} mg/dL"
           if snap.serum_creatinine_mg_dl is not None else "")
    call = state.genotype.call_result
    genotype = "not recorded" if call is None else f"{call.source} (sample {call.sample}, {call.assembly})"
    outside = ", ".join(sorted(state.genotype.outside_calls)) or "none"
    rows = [
        ("Patient", state.patient_id), ("Twin version", str(state.version)),
        ("Sex", sex), ("Age", age),
        ("Weight", weight), ("Renal function", "; ".join(renal) + (f" — {scr}" if scr else "")),
        ("Genotype", genotype), ("Outside calls", outside),
    ]
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return (f'<header><h1>Pharmacogenomic twin report</h1><p class="sub">Patient {_e(state.patient_id)} · '
            f"generated {_e(_time(generated_at))} · covariates as of {_e(_time(as_of))}</p><dl class=\"patient\">{body}</dl></header>")


def _key_reason(ev: Evaluation) -> str:
    if ev.genotype_risks:
        return ev.genotype_risks[0]
    if ev.recommendation is not None and ev.recommendation.text:
        return f"CPIC: {ev.recommendation.text}"
    if ev.missing:
        return "missing: " + "; ".join(ev.missing)
    return ev.reasons[0] if ev.reasons else ""


def _summary(state: TwinState, evaluations: list[Evaluation], unevaluated: list[Medication],
             kb_version: Mapping[str, Any]) -> str:
    meds = {m.drug: m for m in state.current_medications}
    items = []
    for ev in sorted(evaluations, key=lambda e: SEVERITY.get(e.verdict, 9)):
        if ev.verdict == "ok":
            continue
        extra = ""
        if ev.suggested_regimen is not None:
            b = ev.suggested_regimen.best
            extra = (f" Model-based regimen: {b.dose_mg:g} mg every {b.interval_h:g} h "
                     f"(probability of target attainment {b.pta:.0%}).")
        if ev.alternatives:
            extra += f" Alternatives named by CPIC: {', '.join(ev.alternatives)}."
        items.append(
            f'<li>{_badge(ev.verdict)} <strong>{_e(ev.drug)}</strong> {_e(_prescribed(ev, meds.get(ev.drug)))} — '
            f"{_e(_key_reason(ev))}{_e(extra)} <a href=\"#med-{_e(_anchor(ev.drug))}\">details</a></li>"
        )
    for med in unevaluated:
        items.append(f'<li><span class="badge v-unknown">NOT EVALUATED</span> <strong>{_e(med.drug)}</strong> — '
                     "active medication without an evaluation in this report</li>")
    mismatch = _kb_mismatch(state, kb_version)
    if mismatch:
        items.append(f'<li><span class="warn">{_e(mismatch)}</span></li>')
    ok = [ev.drug for ev in evaluations if ev.verdict == "ok"]
    ok_text = (f'<p>{_badge("ok")} No pharmacogenomic action for: {_e(", ".join(ok))}.</p>' if ok else "")
    if not items:
        items_html = '<p>No actionable findings.</p>'
    else:
        items_html = "<ol>" + "".join(items) + "</ol>"
    return f'<section class="summary" id="summary"><h2>Summary: actionable findings</h2>{items_html}{ok_text}</section>'


def _kb_mismatch(state: TwinState, kb_version: Mapping[str, Any]) -> str:
    called = state.genotype.knowledge_base_version
    current = kb_version.get("version")
    if called and current and called != current:
        return (f"The genotype was called with knowledge base {called}; this report uses {current}. "
                "Re-call the genotype to apply the current allele definitions.")
    return ""


def _anchor(drug: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in drug.lower())


def _exposure_table(ev: Evaluation) -> str:
    exp = ev.exposure
    if exp is None:
        return ""
    t = exp.target
    high = "no upper limit" if math.isinf(t.high) else _conc(t.high)
    rows = [
        ("Target", f"{t.metric} of {t.analyte}: {_conc(t.low)} – {high} ({t.description})"),
        ("Predicted (median)", _conc(exp.metric_median)),
        ("Predicted 90% interval", f"{_conc(exp.metric_p05)} – {_conc(exp.metric_p95)}"),
        ("Probability of target attainment", f"{exp.probability_of_target_attainment:.0%}"),
    ]
    if exp.above_toxicity_threshold is not None:
        rows.append(("Above toxicity threshold", f"{exp.above_toxicity_threshold:.0%} of predictions"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h4>Predicted exposure vs target</h4><table>{body}</table>"


def _suggestion(ev: Evaluation) -> str:
    s = ev.suggested_regimen
    if s is None:
        return ""
    b = s.best
    heading = ("Suggested regimen" if ev.verdict == "adjust_dose"
               else "Model-based regimen (for information only; the verdict follows the guideline)")
    return (
        f"<h4>{_e(heading)}</h4><p><strong>"
        f"{_e(f'{b.dose_mg:g} mg every {b.interval_h:g} h')}</strong>: predicted {_e(s.target.metric)} "
        f"{_e(_conc(b.metric_median))} (90% interval {_e(_conc(b.metric_p05))} – {_e(_conc(b.metric_p95))}), "
        f"probability of target attainment {_e(f'{b.pta:.0%}')}.</p>"
    )


def _recommendation(ev: Evaluation) -> str:
    rec = ev.recommendation
    if rec is None:
        return ""
    g = rec.guideline
    phen = ", ".join(f"{gene} {p}" for gene, p in rec.phenotypes.items())
    converted = []
    for gene in rec.phenotypes:
        st = ev.phenotypes.get(gene, {})
        comeds = st.get("co_medications") or []
        if comeds and st.get("genotype_phenotype") != st.get("phenotype"):
            converted.append(f"{gene}: genotype {st.get('genotype_phenotype')}, phenoconverted by {', '.join(comeds)}")
    meta = []
    if g is not None and g.cpic_level:
        meta.append(f"CPIC level {g.cpic_level}")
    if g is not None and g.pmids:
        meta.append("PMID " + ", ".join(g.pmids))
    link = _link(g.url if g is not None else None)
    return (
        f'<h4>CPIC recommendation</h4><div class="cpic"><p><strong>{_e(phen)}</strong> '
        f'(action: {_e(rec.action.replace("_", " "))})</p><p>{_e(rec.text)}</p>'
        + (f'<p class="warn">{_e("; ".join(converted))}</p>' if converted else "")
        + (f'<p class="muted">{_e(" · ".join(meta))}</p>' if meta else "")
        + (f"<p>Guideline: {link}</p>" if link else "")
        + "</div>"
    )


def _estimate_note(state: TwinState, drug: str, digest: str) -> str:
    post = state.posteriors.get(drug)
    n_levels = len(state.concentrations(drug))
    if post is None:
        base = "Prediction from the population model (prior) for this patient's genotype and covariates"
        return f'<p class="muted">{_e(base)}; {n_levels} measured level(s) recorded.</p>'
    text = (f"Individual estimate ({post.method or 'MAP'}) from {post.n_observations if post.n_observations is not None else '?'} "
            f"level(s), estimated {_time(post.estimated_at)}, twin version {post.based_on_version}")
    warn = ""
    if post.library_digest != digest:
        warn = ' <span class="warn">(estimated with a different drug library: re-estimate)</span>'
    return f'<p class="muted">{_e(text)}.{warn}</p>'


def _med_card(ev: Evaluation | None, med: Medication | None, curve: CurveData | None,
              state: TwinState, digest: str) -> str:
    drug = ev.drug if ev is not None else med.drug  # type: ignore[union-attr]
    verdict = ev.verdict if ev is not None else "unknown"
    regimen = _prescribed(ev, med)
    status = ""
    if med is not None:
        status = f"{med.route.replace('_', ' ')}, started {_time(med.started_at)}, {len([d for d in med.doses if not d.retracted])} dose(s) recorded"
    elif ev is not None:
        status = "evaluated prescription (not an active medication)"
    badge = _badge(ev.verdict) if ev is not None else '<span class="badge v-unknown">NOT EVALUATED</span>'
    parts = [
        f'<article class="med s-{_e(verdict)}" id="med-{_e(_anchor(drug))}"><header><h3>{_e(drug)}</h3>{badge}'
        f'<span>{_e(regimen)}</span></header><p class="muted">{_e(status)}</p>'
    ]
    if ev is not None:
        if ev.genotype_risks:
            parts.append("<h4>Genotype risks</h4>" + _list(ev.genotype_risks))
        reasons = [r for r in ev.reasons if not (ev.recommendation is not None and r.startswith("CPIC (")
                                                 and ev.recommendation.text in r)]
        parts.append("<h4>Reasons</h4>" + (_list(reasons) or '<p class="muted">see the CPIC recommendation</p>'))
        parts.append(_recommendation(ev))
        parts.append(_exposure_table(ev))
        parts.append(_suggestion(ev))
        if ev.alternatives:
            parts.append("<h4>Alternatives named by CPIC</h4>" + _list(ev.alternatives))
        if ev.missing:
            parts.append("<h4>Missing data</h4>" + _list(ev.missing))
    else:
        parts.append('<p class="warn">No evaluation was given for this medication.</p>')
    if med is not None and (ev is None or ev.exposure is not None):
        parts.append(_estimate_note(state, drug, digest))
    if curve is not None:
        caption = (f"{curve.drug} — {curve.analyte}: individual prediction (median"
                   + (", 90% interval" if curve.p05 is not None else "") + ")"
                   + (f", {curve.window_label or 'therapeutic window'}" if curve.window_low is not None or curve.window_high is not None else "")
                   + (f", {curve.observed_values.size} measured level(s)" if curve.observed_values.size else "")
                   + (f", {curve.dose_times.size} dose(s) as ticks" if curve.dose_times.size else "")
                   + (f". Source: {curve.source}" if curve.source else "") + ".")
        parts.append(f"<figure>{_png_img(_plot_png(curve), f'Concentration–time plot of {curve.drug} ({curve.analyte})')}"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    elif ev is not None:
        parts.append('<p class="muted">No concentration–time curve for this drug.</p>')
    parts.append("</article>")
    return "".join(p for p in parts if p)


def _medications(state: TwinState, evaluations: list[Evaluation], curves: Mapping[str, CurveData],
                 digest: str) -> tuple[str, list[Medication]]:
    by_drug: dict[str, Evaluation] = {}
    for ev in evaluations:
        by_drug.setdefault(ev.drug, ev)
    active = state.current_medications
    cards, seen, unevaluated = [], set(), []
    order = sorted(active, key=lambda m: (SEVERITY.get(by_drug[m.drug].verdict, 9) if m.drug in by_drug else 4, m.started_at))
    for med in order:
        ev = by_drug.get(med.drug)
        if ev is None:
            unevaluated.append(med)
        seen.add(med.drug)
        cards.append(_med_card(ev, med, curves.get(med.drug), state, digest))
    others = [ev for ev in evaluations if ev.drug not in seen]
    html_ = "<section id=\"medications\"><h2>Active medications</h2>"
    html_ += "".join(cards) if cards else '<p class="muted">No active medications.</p>'
    if others:
        html_ += "<h2>Other evaluated prescriptions</h2>"
        html_ += "".join(_med_card(ev, None, curves.get(ev.drug), state, digest)
                         for ev in sorted(others, key=lambda e: SEVERITY.get(e.verdict, 9)))
    html_ += "</section>"
    return html_, unevaluated


def _phenotypes(evaluations: list[Evaluation]) -> str:
    rows: dict[tuple, list[str]] = {}
    for ev in evaluations:
        for gene, st in ev.phenotypes.items():
            key = (gene, st.get("diplotype"), st.get("genotype_phenotype"), st.get("activity_score"),
                   st.get("phenotype"), st.get("relative_activity"), tuple(st.get("co_medications") or ()))
            rows.setdefault(key, []).append(ev.drug)
    if not rows:
        return ""
    body = []
    for (gene, dip, geno, score, pheno, rel, comeds), drugs in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[1])):
        changed = (geno or None) != (pheno or None) or bool(comeds)
        flag = ' class="flag"' if changed else ""
        body.append(
            f'<tr{flag}><td><strong>{_e(gene)}</strong></td><td>{_e(", ".join(drugs))}</td>'
            f"<td>{_e(dip or '—')}</td><td>{_e(geno or '—')}</td><td class=\"num\">{_e(_score(score))}</td>"
            f"<td>{'<strong>' if changed else ''}{_e(pheno or '—')}{'</strong>' if changed else ''}</td>"
            f"<td class=\"num\">{_e(_num(rel, 2))}</td><td>{_e(', '.join(comeds) or 'none')}</td></tr>"
        )
    return (
        '<section id="phenotypes"><h2>Phenotypes: genotype vs phenoconverted</h2>'
        '<p class="muted">Phenoconverted = after the enzyme inhibition or induction of current co-medications. '
        "Highlighted rows differ from the genotype-predicted phenotype.</p>"
        "<table><thead><tr><th>Gene</th><th>For</th><th>Diplotype</th><th>Genotype phenotype</th>"
        "<th>Activity score</th><th>Phenoconverted phenotype</th><th>Relative activity</th><th>Co-medications</th>"
        "</tr></thead><tbody>" + "".join(body) + "</tbody></table></section>"
    )


def _gene_row(gene: str, r: GeneResult) -> str:
    missing = r.missing_positions
    if missing:
        miss = (f"<details><summary>{len(missing)} missing</summary>{_list(missing)}</details>")
    else:
        miss = "0"
    diplotypes = "<br>".join(_e(d) for d in r.diplotypes) or "—"
    notes = list(r.notes)
    if r.unexpected_variants:
        notes.append("unexpected variants: " + ", ".join(r.unexpected_variants))
    return (
        f"<tr><td><strong>{_e(gene)}</strong></td><td class=\"status-{_e(r.status)}\">{_e(r.status.replace('_', ' '))}</td>"
        f"<td>{diplotypes}</td><td>{_e(r.phenotype)}</td><td class=\"num\">{_e(_score(r.activity_score))}</td>"
        f"<td>{miss}</td><td>{_list(notes)}</td></tr>"
    )


_GENE_HEAD = ("<table><thead><tr><th>Gene</th><th>Status</th><th>Diplotype(s)</th><th>Phenotype</th>"
              "<th>Activity score</th><th>Missing positions</th><th>Notes</th></tr></thead><tbody>")


def _genotype(state: TwinState, evaluations: list[Evaluation]) -> str:
    genes = state.genotype.genes
    if not genes:
        return '<section id="genotype"><h2>Genotype</h2><p class="warn">No genotype recorded.</p></section>'
    relevant = {g for ev in evaluations for g in ev.phenotypes}
    main, rest = [], []
    for gene in sorted(genes, key=lambda g: (g not in relevant, g)):
        r = genes[gene]
        important = (gene in relevant or r.phenotype not in UNKNOWN_PHENOTYPES or r.status != "called"
                     or bool(r.missing_positions))
        (main if important else rest).append(_gene_row(gene, r))
    call = state.genotype.call_result
    src = "" if call is None else (f'<p class="muted">Called from {_e(call.source)} (sample {_e(call.sample)}, '
                                   f"{_e(call.assembly)}), knowledge base {_e(call.knowledge_base.version)}. "
                                   "A missing position is never assumed reference.</p>")
    html_ = f'<section id="genotype"><h2>Genotype</h2>{src}{_GENE_HEAD}{"".join(main)}</tbody></table>'
    if rest:
        html_ += (f"<details><summary>{len(rest)} other genes called without a phenotype rule</summary>"
                  f"{_GENE_HEAD}{''.join(rest)}</tbody></table></details>")
    return html_ + "</section>"


def _footer(state: TwinState, kb_version: Mapping[str, Any], digest: str, generated_at: datetime) -> str:
    rows = [(f"knowledge base: {k}", v) for k, v in kb_version.items() if k not in ("library_digest", "drug_library_digest")]
    rows.append(("drug library digest (SHA-256)", digest))
    if state.genotype.knowledge_base_version:
        rows.append(("genotype called with knowledge base", state.genotype.knowledge_base_version))
    rows.append(("twin version", state.version))
    rows.append(("generated at", generated_at.astimezone(timezone.utc).isoformat(timespec="seconds")))
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    return (
        '<footer id="versions"><h2>Versions</h2><table>' + body + "</table>"
        "<p>Generated by pgxtwin. Predictions are model-based decision support and do not replace clinical "
        "judgement; check the CPIC guideline text before acting.</p></footer>"
    )


# ---------------------------------------------------------------------------------------------
# public API


def render_twin_report(
    state: TwinState,
    *,
    evaluations: list[Evaluation],
    curves: Mapping[str, CurveData],
    kb_version: Mapping[str, Any],
    generated_at: datetime | None = None,
    as_of: datetime | None = None,
) -> str:
    """The twin as one self-contained HTML document (a str).

    ``curves`` maps a drug (library name, as in :attr:`Evaluation.drug`) to its plot data;
    ``kb_version`` is :func:`pgxtwin.knowledge.version.knowledge_base_version` (a
    ``drug_library_digest`` key, if present, overrides the current library's digest).
    ``generated_at`` defaults to now (UTC); ``as_of`` (covariates, age) to ``generated_at``.
    """
    generated_at = generated_at or datetime.now(timezone.utc)
    if generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware")
    as_of = as_of or generated_at
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    digest = str(kb_version.get("drug_library_digest") or kb_version.get("library_digest") or "")
    if not digest:
        from ..knowledge.drugs import library_digest

        digest = library_digest()
    evaluations = list(evaluations)
    meds_html, unevaluated = _medications(state, evaluations, curves, digest)
    body = "".join([
        _patient_header(state, as_of, generated_at),
        _summary(state, evaluations, unevaluated, kb_version),
        meds_html,
        _phenotypes(evaluations),
        _genotype(state, evaluations),
        _footer(state, kb_version, digest, generated_at),
    ])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>pgxtwin report — {_e(state.patient_id)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_twin_report(
    path: str | os.PathLike[str],
    state: TwinState,
    *,
    evaluations: list[Evaluation],
    curves: Mapping[str, CurveData],
    kb_version: Mapping[str, Any],
    generated_at: datetime | None = None,
    as_of: datetime | None = None,
) -> Path:
    """Render and write the report atomically (temporary file in the same folder + ``os.replace``)."""
    text = render_twin_report(state, evaluations=evaluations, curves=curves, kb_version=kb_version,
                              generated_at=generated_at, as_of=as_of)
    return atomic_write(path, text.encode("utf-8"))
