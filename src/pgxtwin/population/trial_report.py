"""Summary of a trial by arm × phenotype stratum, with confidence intervals, plots and an HTML page.

Each part file (one chunk) is reduced to an aggregate per (arm, stratum): counts of each binary
endpoint, count/mean/sum of squared deviations of each continuous measure, counts of regimens
and drugs, and a histogram of log10 Css,avg.  Aggregates are merged in part-name order (Chan et
al.'s pairwise update for the moments), so ``trial run`` (aggregates computed by the tasks) and
``trial report`` (aggregates recomputed from the Parquet parts) give the same numbers.  Strata are
the phenotypes of the trial's ``stratify_by`` genes; "all" pools an arm's strata.

Intervals (95%): proportions — Wilson score interval (Wilson 1927, J Am Stat Assoc 22:209-212);
means — Student t interval, mean ± t(0.975, n-1)·s/√n (none for n < 2; clipped to [0, 1] for
the time in window, a fraction).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from ..atomic import atomic_write
from ..errors import PgxInputError

Z_95 = 1.959963984540054  # standard normal 97.5th percentile
CONFIDENCE = 0.95
FRACTION_BOUNDS = (0.0, 1.0)  # time in window is a fraction: its t interval is clipped to it
# log10(Css,avg in mg/L) histogram: 1 ng/L to 1000 mg/L in 0.025-decade bins (+ under/overflow)
HIST_LOW, HIST_HIGH, HIST_STEP = -6.0, 3.0, 0.025
HIST_BINS = int(round((HIST_HIGH - HIST_LOW) / HIST_STEP)) + 2
PROPORTIONS = ("target_attained", "adverse_reaction", "efficacy")
MEANS = ("time_in_window", "css_avg_mg_l", "trough_mg_l", "cmax_mg_l", "auc_tau_mg_h_l", "daily_dose_mg")
LABELS = {
    "target_attained": "target attainment (PTA)",
    "time_in_window": "time in window",
    "adverse_reaction": "adverse-reaction incidence",
    "efficacy": "efficacy proxy",
    "css_avg_mg_l": "Css,avg (mg/L)",
    "trough_mg_l": "trough (mg/L)",
    "cmax_mg_l": "Cmax (mg/L)",
    "auc_tau_mg_h_l": "AUCτ (mg·h/L)",
    "daily_dose_mg": "daily dose (mg)",
}
ALL = "all"


@dataclass(frozen=True)
class SummaryConfig:
    """What the summary groups by and reports."""

    arms: tuple[str, ...]
    stratify_by: tuple[str, ...]
    proportions: tuple[str, ...]  # binary endpoint columns present
    means: tuple[str, ...]  # continuous columns summarised


def _config(arms: Sequence[str], stratify_by: Sequence[str], endpoints: Sequence[str]) -> SummaryConfig:
    from .endpoints import ENDPOINT_COLUMNS

    columns = [ENDPOINT_COLUMNS[e] for e in endpoints]
    return SummaryConfig(
        tuple(arms), tuple(stratify_by), tuple(c for c in PROPORTIONS if c in columns),
        tuple(c for c in MEANS if c != "time_in_window" or c in columns),
    )


def config_of(plan: Any) -> SummaryConfig:
    """From a :class:`pgxtwin.population.trial.TrialPlan`."""
    return _config([a.name for a in plan.spec.arms], plan.stratify_by, plan.endpoints)


def config_from_manifest(manifest: Mapping[str, Any]) -> SummaryConfig:
    """From a results folder's manifest.json."""
    trial = manifest["trial"]
    return _config([a["name"] for a in trial["arms"]], manifest["plan"]["stratify_by"], trial["endpoints"])


# ---------------------------------------------------------------------------------------------
# aggregates


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a measure (mergeable)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, other: "Moments") -> "Moments":
        n = self.n + other.n
        if n == 0:
            return Moments()
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta * delta * self.n * other.n / n)


@dataclass
class GroupStats:
    """One (arm, stratum) group of one part, or merged."""

    n: int = 0
    successes: dict[str, int] = field(default_factory=dict)
    moments: dict[str, Moments] = field(default_factory=dict)
    regimens: dict[str, int] = field(default_factory=dict)
    drugs: dict[str, int] = field(default_factory=dict)
    histogram: dict[str, np.ndarray] = field(default_factory=dict)  # drug -> log10 Css,avg counts

    def merge(self, other: "GroupStats") -> "GroupStats":
        out = GroupStats(self.n + other.n)
        for key in dict.fromkeys([*self.successes, *other.successes]):
            out.successes[key] = self.successes.get(key, 0) + other.successes.get(key, 0)
        for key in dict.fromkeys([*self.moments, *other.moments]):
            out.moments[key] = self.moments.get(key, Moments()).merge(other.moments.get(key, Moments()))
        for name in ("regimens", "drugs"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(out, name, {k: mine.get(k, 0) + theirs.get(k, 0) for k in sorted({*mine, *theirs})})
        for drug in sorted({*self.histogram, *other.histogram}):
            out.histogram[drug] = self.histogram.get(drug, np.zeros(HIST_BINS, np.int64)) + other.histogram.get(drug, np.zeros(HIST_BINS, np.int64))
        return out


Aggregate = dict[tuple[str, str], GroupStats]


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer codes and names of a (chunked, dictionary or plain) string column."""
    names: dict[str, int] = {}
    parts = []
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        mapping = np.array([names.setdefault(v, len(names)) for v in chunk.dictionary.to_pylist()], dtype=np.int64)
        parts.append(mapping[chunk.indices.to_numpy(zero_copy_only=False)] if len(mapping) else np.zeros(len(chunk), np.int64))
    codes = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return codes, list(names)


def _strata(table: pa.Table, genes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    if not genes:
        return np.zeros(table.num_rows, np.int64), [ALL]
    key = np.zeros(table.num_rows, np.int64)
    per_gene = []
    for gene in genes:
        codes, names = _codes(table.column(f"{gene}_phenotype"))
        key = key * max(1, len(names)) + codes
        per_gene.append(names)
    labels = []
    for combo in range(int(np.prod([max(1, len(n)) for n in per_gene]))):
        picked, rest = [], combo
        for gene, names in reversed(list(zip(genes, per_gene))):
            rest, k = divmod(rest, max(1, len(names)))
            picked.append(f"{gene} {names[k]}" if names else gene)
        labels.append(" / ".join(reversed(picked)))
    return key, labels


def aggregate_part(config: SummaryConfig, table: pa.Table) -> Aggregate:
    """Per (arm, stratum) aggregate of one part's rows."""
    from .arms import dense_codes

    if table.num_rows == 0:
        return {}
    arm, arm_names = _codes(table.column("arm"))
    stratum, stratum_names = _strata(table, config.stratify_by)
    key = arm * len(stratum_names) + stratum
    groups, inverse = dense_codes(key, len(arm_names) * len(stratum_names))
    g = groups.shape[0]
    counts = np.bincount(inverse, minlength=g)
    values = {c: table.column(c).to_numpy() for c in config.proportions}
    measures = {c: table.column(c).to_numpy() for c in config.means if c != "daily_dose_mg"}
    measures["daily_dose_mg"] = table.column("dose_mg").to_numpy() * 24.0 / table.column("interval_h").to_numpy()
    regimen, regimen_names = _codes(table.column("regimen"))
    drug, drug_names = _codes(table.column("drug"))
    log_css = np.log10(np.maximum(table.column("css_avg_mg_l").to_numpy(), 1e-300))
    bins = np.clip(np.floor((log_css - HIST_LOW) / HIST_STEP).astype(np.int64) + 1, 0, HIST_BINS - 1)
    out: Aggregate = {}
    sums = {c: np.bincount(inverse, weights=v.astype(float), minlength=g) for c, v in values.items()}
    means = {c: np.bincount(inverse, weights=v, minlength=g) / counts for c, v in measures.items()}
    m2 = {c: np.bincount(inverse, weights=(v - means[c][inverse]) ** 2, minlength=g) for c, v in measures.items()}
    regimen_counts = np.bincount(inverse * len(regimen_names) + regimen, minlength=g * len(regimen_names)).reshape(g, -1)
    drug_counts = np.bincount(inverse * len(drug_names) + drug, minlength=g * len(drug_names)).reshape(g, -1)
    hist = np.bincount((inverse * len(drug_names) + drug) * HIST_BINS + bins, minlength=g * len(drug_names) * HIST_BINS)
    hist = hist.reshape(g, len(drug_names), HIST_BINS)
    for k, group in enumerate(groups):
        a, s = divmod(int(group), len(stratum_names))
        stats_ = GroupStats(int(counts[k]))
        stats_.successes = {c: int(round(sums[c][k])) for c in values}
        stats_.moments = {c: Moments(int(counts[k]), float(means[c][k]), float(m2[c][k])) for c in measures}
        stats_.regimens = {name: int(regimen_counts[k, r]) for r, name in enumerate(regimen_names) if regimen_counts[k, r]}
        stats_.drugs = {name: int(drug_counts[k, d]) for d, name in enumerate(drug_names) if drug_counts[k, d]}
        stats_.histogram = {name: hist[k, d].astype(np.int64) for d, name in enumerate(drug_names) if drug_counts[k, d]}
        out[(arm_names[a], stratum_names[s])] = stats_
    return out


def part_aggregator(config: SummaryConfig) -> Callable[[pa.Table], Aggregate]:
    """The per-part reduction the workers run (picklable)."""
    return partial(aggregate_part, config)


@dataclass(frozen=True)
class Summary:
    """Merged aggregates: per arm, per stratum (and ALL) the group's statistics."""

    groups: dict[tuple[str, str], GroupStats]
    strata: tuple[str, ...]

    def rows(self, config: SummaryConfig) -> list[dict[str, Any]]:
        """Long format: one row per (arm, stratum, measure) with estimate and 95% interval."""
        out = []
        for arm in config.arms:
            for stratum in (*self.strata, ALL):
                group = self.groups.get((arm, stratum))
                if group is None:
                    continue
                for column in config.proportions:
                    low, high = wilson_interval(group.successes[column], group.n)
                    out.append(_row(arm, stratum, group.n, column, "proportion", group.successes[column] / group.n, low, high, "Wilson"))
                for column in config.means:
                    m = group.moments[column]
                    low, high = _mean_interval(column, m)
                    out.append(_row(arm, stratum, group.n, column, "mean", m.mean, low, high, "Student t"))
                for regimen, count in group.regimens.items():
                    low, high = wilson_interval(count, group.n)
                    out.append(_row(arm, stratum, group.n, f"regimen: {regimen}", "proportion", count / group.n, low, high, "Wilson"))
        return out


def _row(arm: str, stratum: str, n: int, measure: str, kind: str, estimate: float, low: float, high: float, method: str) -> dict[str, Any]:
    return {"arm": arm, "stratum": stratum, "n": n, "measure": measure, "kind": kind, "estimate": estimate,
            "ci_low": low, "ci_high": high, "method": method}


def merge(aggregates: Sequence[Aggregate], config: SummaryConfig) -> Summary:
    """Merge part aggregates (in the order given: part-name order) and pool each arm's strata."""
    groups: dict[tuple[str, str], GroupStats] = {}
    for aggregate in aggregates:
        for key in sorted(aggregate):
            groups[key] = groups[key].merge(aggregate[key]) if key in groups else aggregate[key]
    strata = tuple(sorted({s for _, s in groups}))
    for arm in config.arms:
        pooled = None
        for stratum in strata:
            if (arm, stratum) in groups:
                pooled = groups[(arm, stratum)] if pooled is None else pooled.merge(groups[(arm, stratum)])
        if pooled is not None and strata != (ALL,):
            groups[(arm, ALL)] = pooled
    return Summary(groups, tuple(s for s in strata if s != ALL))


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for the default z)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(m: Moments, confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Student t interval of a mean (clipped to ``bounds``, e.g. [0, 1] for a fraction of time); NaN for n < 2."""
    if m.n < 2:
        return math.nan, math.nan
    sd = math.sqrt(m.m2 / (m.n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, m.n - 1)) * sd / math.sqrt(m.n)
    low, high = m.mean - half, m.mean + half
    return (low, high) if bounds is None else (max(bounds[0], low), min(bounds[1], high))


def _mean_interval(column: str, m: Moments) -> tuple[float, float]:
    return t_interval(m, bounds=FRACTION_BOUNDS if column == "time_in_window" else None)


# ---------------------------------------------------------------------------------------------
# outputs


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["arm", "stratum", "n", "measure", "kind", "estimate", "ci_low", "ci_high", "method"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def endpoints_plot(summary: Summary, config: SummaryConfig) -> bytes | None:
    """Grouped bars (arm) per stratum, one panel per endpoint, 95% intervals as error bars."""
    from matplotlib.figure import Figure

    measures = [*config.proportions, *(["time_in_window"] if "time_in_window" in config.means else [])]
    if not measures:
        return None
    strata = [*summary.strata, ALL] if summary.strata else [ALL]
    fig = Figure(figsize=(max(7.0, 1.2 * len(strata) * max(1, len(config.arms)) * 0.45 + 3), 3.0 * len(measures)))
    width = 0.8 / max(1, len(config.arms))
    for i, column in enumerate(measures):
        ax = fig.add_subplot(len(measures), 1, i + 1)
        top = 0.0
        for a, arm in enumerate(config.arms):
            xs, ys, lows, highs = [], [], [], []
            for s, stratum in enumerate(strata):
                group = summary.groups.get((arm, stratum))
                if group is None or group.n == 0:
                    continue
                if column == "time_in_window":
                    estimate, (low, high) = group.moments[column].mean, _mean_interval(column, group.moments[column])
                else:
                    estimate, (low, high) = group.successes[column] / group.n, wilson_interval(group.successes[column], group.n)
                xs.append(s + (a - (len(config.arms) - 1) / 2) * width)
                ys.append(estimate)
                lows.append(max(0.0, estimate - low) if math.isfinite(low) else 0.0)  # rounding at p = 0 or 1
                highs.append(max(0.0, high - estimate) if math.isfinite(high) else 0.0)
                top = max(top, estimate + highs[-1])
            ax.bar(xs, ys, width=width, yerr=[lows, highs], capsize=2, label=arm)
        ax.set_xticks(range(len(strata)))
        ax.set_xticklabels([s.replace(" / ", "\n") for s in strata], fontsize=7, rotation=20, ha="right")
        ax.set_ylim(0, min(1.05, max(0.05, 1.15 * top)))  # rare events stay visible
        ax.set_ylabel(LABELS[column], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _figure_png(fig)


def exposure_plot(summary: Summary, config: SummaryConfig) -> bytes | None:
    """Distribution of Css,avg per arm (all strata), by drug, against the drug's window."""
    from matplotlib.figure import Figure

    from ..knowledge.drugs import load_drug

    arms = [a for a in config.arms if (a, ALL) in summary.groups]
    if not arms:
        return None
    fig = Figure(figsize=(8.5, 2.4 * len(arms)))
    centres = HIST_LOW + (np.arange(HIST_BINS - 2) + 0.5) * HIST_STEP
    filled = np.flatnonzero(sum(h[1:-1] for a in arms for h in summary.groups[(a, ALL)].histogram.values()))
    span = (10 ** (centres[filled[0]] - 0.3), 10 ** (centres[filled[-1]] + 0.3)) if filled.size else None
    for i, arm in enumerate(arms):
        ax = fig.add_subplot(len(arms), 1, i + 1)
        group = summary.groups[(arm, ALL)]
        for drug, counts in group.histogram.items():
            density = counts[1:-1] / max(1, group.n) / HIST_STEP
            ax.plot(10**centres, density, lw=1.4, label=f"{drug} (n={group.drugs.get(drug, 0)})")
            window = load_drug(drug).therapeutic_window
            if window is not None and window.unit == "mg/L" and window.metric in ("css_avg", "concentration"):
                ax.axvspan(window.low or 10**HIST_LOW, window.high or 10**HIST_HIGH, color="#2e7d32", alpha=0.10)
        ax.set_xscale("log")
        if span is not None:
            ax.set_xlim(*span)
        ax.set_ylabel("density per decade", fontsize=8)
        ax.set_title(arm, fontsize=9, loc="left")
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    fig.axes[-1].set_xlabel("Css,avg over the last dosing interval (mg/L)")
    fig.tight_layout()
    return _figure_png(fig)


def _fmt(value: float, kind: str) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{100 * value:.1f}%" if kind == "proportion" else f"{value:.4g}"


def wide_table(summary: Summary, config: SummaryConfig) -> tuple[list[str], list[list[str]]]:
    """Header and rows (arm, stratum, n, one cell per endpoint 'estimate (low–high)', daily dose)."""
    measures = [*config.proportions, *(["time_in_window"] if "time_in_window" in config.means else []), "daily_dose_mg"]
    header = ["arm", "stratum", "n", *(LABELS[m] for m in measures)]
    rows = []
    for arm in config.arms:
        for stratum in (*summary.strata, ALL):
            group = summary.groups.get((arm, stratum))
            if group is None:
                continue
            cells = [arm, stratum, str(group.n)]
            for m in measures:
                if m in config.proportions:
                    kind, estimate, (low, high) = "proportion", group.successes[m] / group.n, wilson_interval(group.successes[m], group.n)
                else:
                    kind = "proportion" if m == "time_in_window" else "mean"
                    estimate, (low, high) = group.moments[m].mean, _mean_interval(m, group.moments[m])
                cells.append(f"{_fmt(estimate, kind)} ({_fmt(low, kind)}–{_fmt(high, kind)})")
            rows.append(cells)
    return header, rows


def _regimen_text(arm: Mapping[str, Any]) -> str:
    """What an arm gives, in words (from the trial and the drug library)."""
    from ..knowledge.drugs import load_drug

    if arm["kind"] == "genotype_guided":
        return "the twin's optimiser per genotype stratum (prior, default target)"
    if arm["kind"] == "cpic":
        return "CPIC recommendation for the patient's phenotypes" + (f"; alternative: {arm['alternative']}" if arm.get("alternative") else "")
    standard = load_drug(arm["drug"]).dosing.standard
    dose, every = arm.get("dose") or standard.dose, arm.get("interval_h") or standard.interval_h
    return f"{dose} every {every:g} h" + ("" if arm.get("dose") or arm.get("interval_h") else " (label)")


def render_html(summary: Summary, config: SummaryConfig, manifest: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
    """A self-contained page: design, summary table, plots, methods, versions."""
    from ..knowledge.drugs import load_drug
    from ..report.html import CSS

    trial = manifest["trial"]
    counts = manifest["counts"]
    e = partial(escape, quote=True)
    arms_rows = "".join(
        f"<tr><td>{e(a['name'])}</td><td>{e(a['kind'])}</td><td>{e(a['drug'])}</td><td>{e(a.get('alternative') or '')}</td>"
        f"<td>{e(_regimen_text(a))}</td></tr>"
        for a in trial["arms"]
    )
    header, rows = wide_table(summary, config)
    table = "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
    table += "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</tbody></table>"
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{e(name)}">'
        f"<figcaption>{e(name)}</figcaption></figure>"
        for name, png in plots.items()
    )
    drugs = sorted({a["drug"] for a in trial["arms"]} | {a["alternative"] for a in trial["arms"] if a.get("alternative")})
    sources = []
    for name in drugs:
        d = load_drug(name)
        if d.therapeutic_window is not None:
            w = d.therapeutic_window
            sources.append(f"{name}: therapeutic window {w.metric} {w.low}–{w.high} {w.unit} ({w.source})")
        for t in d.toxicity_thresholds:
            bound = " and ".join(x for x in (f"above {t.high:g}" if t.high is not None else "", f"below {t.low:g}" if t.low is not None else "") if x)
            sources.append(f"{name}: adverse-reaction threshold: {t.metric} {bound} {t.unit} ({t.source})")
    execution = manifest.get("execution", {})
    mix = ", ".join(f"{g} {f:g}" for g, f in trial["population"]["mix"].items())
    body = f"""
<h1>In-silico trial: {e(trial['name'])}</h1>
<p class="sub">{counts['screened']:,} virtual patients screened, {counts['enrolled']:,} enrolled ({e(mix)});
{trial['replicates']} replicate(s); {trial['duration_days']:g} days; seed {trial['seed']}; strata by {e(', '.join(config.stratify_by) or 'none')}.</p>
<h2>Arms</h2>
<table><thead><tr><th>arm</th><th>kind</th><th>drug</th><th>alternative</th><th>regimen</th></tr></thead><tbody>{arms_rows}</tbody></table>
<h2>Endpoints by arm and phenotype</h2>
<p class="muted">Estimates with 95% intervals: Wilson score for proportions, Student t for means. Every enrolled patient
receives every arm; exposure is over the last dosing interval of the trial.</p>
{table}
<h2>Plots</h2>
{figures}
<h2>Methods and sources</h2>
<ul>
<li>Target attainment: the therapeutic window's metric within its bounds; time in window: fraction of the last dosing
interval with the concentration in the window (linear interpolation on an equally spaced grid); adverse reaction: any
toxicity threshold crossed; efficacy proxy (prodrugs): active-metabolite Css,avg ≥ 80% of a normal metabolizer's on the label regimen.</li>
{''.join(f'<li>{e(s)}</li>' for s in sources)}
</ul>
<footer><table>
<tr><th>pgxtwin</th><td>{e(manifest['versions']['pgxtwin'])}</td></tr>
<tr><th>knowledge base</th><td>{e(manifest['versions']['knowledge_base'])}</td></tr>
<tr><th>drug library</th><td><code>{e(manifest['versions']['drug_library_sha256'])}</code></td></tr>
<tr><th>execution</th><td>{e(str(execution.get('scheduler')))}; {execution.get('tasks')} tasks of ≤ {execution.get('chunk_size')} patients;
{execution.get('seconds', 0):.1f} s</td></tr>
<tr><th>page generated</th><td>{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</td></tr>
</table></footer>
"""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>pgxtwin trial — {e(trial['name'])}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_outputs(folder: Path, summary: Summary, config: SummaryConfig, manifest: Mapping[str, Any]) -> None:
    """summary.csv, summary.json, plots/*.png and report.html in ``folder`` (each written atomically)."""
    rows = summary.rows(config)
    atomic_write(folder / "summary.csv", _csv(rows))
    document = {"config": {"arms": list(config.arms), "stratify_by": list(config.stratify_by)},
                "intervals": {"proportion": "Wilson score, 95%", "mean": "Student t, 95% (time in window: clipped to [0, 1])"}, "rows": rows}
    atomic_write(folder / "summary.json", json.dumps(document, indent=1, allow_nan=True))
    (folder / "plots").mkdir(exist_ok=True)
    plots = {}
    for name, png in (("endpoints", endpoints_plot(summary, config)), ("exposure", exposure_plot(summary, config))):
        if png is not None:
            atomic_write(folder / "plots" / f"{name}.png", png)
            plots[name] = png
    atomic_write(folder / "report.html", render_html(summary, config, manifest, plots))


def report(folder: str | Path) -> tuple[Summary, SummaryConfig]:
    """Recompute the summary, plots and page of a results folder from its Parquet parts."""
    from .execution import read_parts

    root = Path(folder)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise PgxInputError(f"{str(root)!r} is not a trial results folder (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        config = config_from_manifest(manifest)
    except (ValueError, KeyError, TypeError) as exc:
        raise PgxInputError(f"{manifest_path}: unreadable manifest ({exc})") from None
    names = [p.name for p in sorted((root / "patients").glob("part-*.parquet"))]
    if names != sorted(manifest.get("parts", [])):
        raise PgxInputError(f"{root / 'patients'}: part files differ from the manifest's list ({len(names)} found,"
                            f" {len(manifest.get('parts', []))} expected)")
    aggregates = [aggregate_part(config, table) for _, table in read_parts(root / "patients")]
    summary = merge(aggregates, config)
    write_outputs(root, summary, config, manifest)
    return summary, config
