"""Digital-twin-assisted analysis of a two-arm randomised trial: prognostic covariate adjustment (PROCOVA).

Each participant's *prognostic score* is the outcome the twin predicts for them under the control
regimen (or a score computed elsewhere and given in the trial file).  The treatment effect is the
coefficient of the treatment indicator in an ANCOVA of the outcome on treatment and prognostic score
(Schuler A et al. Increasing the efficiency of randomized trial estimates via linear adjustment for a
prognostic score. Int J Biostat 2021, doi:10.1515/ijb-2021-0072; EMA qualification opinion for
prognostic covariate adjustment (PROCOVA), 2022, EMADOC-1700519818-907465).  Randomisation makes the
score independent of the arm, so adjusting for it cannot bias the estimate however wrong the twin is;
a good twin only shrinks its variance, by the factor 1 - ρ² where ρ is the correlation between score
and outcome (Schuler 2021, simplified asymptotic variance formula): the trial has the power an
unadjusted trial would have with n / (1 - ρ²) participants.

Standard errors are HC3 (heteroscedasticity-consistent): ANCOVA without a treatment-by-score
interaction is misspecified whenever the arms' variances differ or the effect varies with the
prognosis, and the model-based standard error can then be too small, while the sandwich one stays
asymptotically valid or conservative for the average effect in a randomised trial (Lin W. Ann Appl
Stat 2013;7:295-318, doi:10.1214/12-AOAS583).  HC3 rather than HC0 because it holds in small samples
(Long JS, Ervin LH. Am Stat 2000;54:217-224, doi:10.2307/2685594).  Intervals and p-values use the
t distribution with the residual degrees of freedom.

Scale: with ``log=True`` both outcome and score are analysed as natural logarithms; use it when the
outcome is an exposure (AUC, concentrations are log-normal across patients and genotype, dose and
covariate effects on them are multiplicative, so additive on the log scale).  The effect is then a
log ratio, also reported as the ratio of geometric means (treatment / control).  Units: whatever the
outcome's are; twin-predicted exposures are in mg/L or h·mg/L.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import statsmodels.api as sm

from ..errors import PgxInputError
from ..knowledge.drugs import resolve_drug
from ..knowledge.phenotypes import phenotype_names
from ..pk.drug_model import GeneInput, PatientFactors, drug_model
from ..pk.scenarios import parse_every, simulate_regimen

ID, ARM, OUTCOME, SCORE = "participant_id", "arm", "outcome", "prognostic_score"
# optional covariate columns of the twin -> PatientFactors field (units in the name; age in years)
COVARIATES = {"age": "age_years", "weight_kg": "weight_kg", "height_cm": "height_cm", "crcl_ml_min": "crcl_ml_min"}
SEX, COMEDICATIONS = "sex", "comedications"
GENE_SUFFIXES = ("_phenotype", "_diplotype")
# a floor, not a published threshold: below it the control-arm ρ behind the sample-size figure is noise
MIN_PER_ARM = 10
# exposure metric (command-line name) -> key of pgxtwin.pk.scenarios.Simulation.metrics, last dosing interval
METRICS = {
    "auc_tau": "auc_tau_mg_h_per_l",
    "cmax": "cmax_mg_per_l",
    "cmin": "cmin_mg_per_l",
    "css_avg": "css_avg_mg_per_l",
}
GRID_POINTS = 241  # output times over the last dosing interval (trapezoidal AUC, Cmax)


@dataclass(frozen=True)
class ControlRegimen:
    """The control arm's regimen and the exposure the trial measured: what the twin predicts."""

    drug: str  # library name
    dose: str  # e.g. "75 mg", "0.1 mg/kg"
    every_h: float
    days: float
    metric: str  # a key of METRICS
    analyte: str

    @classmethod
    def resolve(
        cls, drug: str, dose: str | None = None, every: str | None = None, days: float = 14.0,
        metric: str = "auc_tau", analyte: str | None = None,
    ) -> "ControlRegimen":
        """Checked regimen; dose and interval default to the library's standard regimen, the analyte to
        the drug's main one."""
        name = resolve_drug(drug)  # UnknownDrug is a PgxInputError
        model = drug_model(name)
        standard = model.drug.dosing.standard
        if metric not in METRICS:
            raise PgxInputError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
        analyte = analyte or next(iter(model.analytes))
        if analyte not in model.analytes:
            raise PgxInputError(f"--analyte {analyte!r}: {name} has {', '.join(model.analytes)}")
        every_h = parse_every(every) if every is not None else float(standard.interval_h)
        if every_h <= 0:
            raise PgxInputError("--every must be a positive duration")
        if not (days > 0 and math.isfinite(days)):
            raise PgxInputError("--days must be positive")
        return cls(name, dose or standard.dose, every_h, float(days), metric, analyte)

    def describe(self) -> str:
        return (f"twin: {self.drug} {self.dose} every {self.every_h:g} h for {self.days:g} days,"
                f" {self.metric} of {self.analyte} over the last interval")

    def predict(self, patient: PatientFactors) -> tuple[float, tuple[str, ...]]:
        """The twin's typical-individual prediction of the metric for this patient (no between-subject
        variability: the control outcome expected from what is known of the patient), and the twin's
        notes on what it did not know."""
        # the last dose, as simulate_regimen places it: doses every every_h through days
        n_doses = max(1, math.ceil(self.days * 24.0 / self.every_h - 1e-9))
        last = (n_doses - 1) * self.every_h
        times = np.linspace(last, last + self.every_h, GRID_POINTS)
        sim = simulate_regimen(self.drug, patient, dose=self.dose, every_h=self.every_h, days=self.days, n=1, times_h=times)
        return sim.metrics[self.analyte][METRICS[self.metric]]["median"], sim.individual.notes


@dataclass(frozen=True)
class Trial:
    """Observed outcomes of a two-arm trial with each participant's prognostic score."""

    source: str
    participant_ids: tuple[str, ...]
    lines: np.ndarray  # line of each participant in the file
    control_arm: str
    treatment_arm: str
    treated: np.ndarray  # bool
    outcome: np.ndarray
    score: np.ndarray
    score_origin: str  # "column prognostic_score" or the twin regimen
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """A treatment-effect estimate (difference treatment - control on the analysis scale)."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float

    def as_dict(self, ratio: bool) -> dict[str, float]:
        out = {"estimate": self.estimate, "se": self.se, "ci_low": self.ci_low, "ci_high": self.ci_high,
               "p_value": self.p_value}
        if ratio:  # log scale: the ratio of geometric means and its interval
            out |= {"ratio": math.exp(self.estimate), "ratio_ci_low": math.exp(self.ci_low),
                    "ratio_ci_high": math.exp(self.ci_high)}
        return out


@dataclass(frozen=True)
class ProcovaResult:
    n: int
    n_control: int
    n_treatment: int
    scale: str  # "linear" or "log"
    level: float  # confidence level of the intervals
    adjusted: Estimate  # PROCOVA: outcome ~ treatment + prognostic score
    unadjusted: Estimate  # outcome ~ treatment
    score_coefficient: float
    rho_control: float  # correlation of score and outcome in the control arm
    empirical_variance_ratio: float  # SE²(unadjusted) / SE²(adjusted), this trial

    @property
    def variance_reduction(self) -> float:
        """1 - ρ²: the adjusted estimator's variance relative to the unadjusted one (Schuler 2021)."""
        return 1.0 - self.rho_control**2

    @property
    def n_equivalent_unadjusted(self) -> float | None:
        """Participants an unadjusted analysis would need for the same power: n / (1 - ρ²)."""
        return self.n / self.variance_reduction if self.variance_reduction > 0 else None

    @property
    def n_equivalent_empirical(self) -> float:
        """The same from this trial's standard errors: n · SE²(unadjusted) / SE²(adjusted)."""
        return self.n * self.empirical_variance_ratio

    def as_dict(self) -> dict[str, object]:
        ratio = self.scale == "log"
        return {
            "n": self.n, "n_control": self.n_control, "n_treatment": self.n_treatment,
            "scale": self.scale, "confidence_level": self.level, "standard_errors": "HC3",
            "effect": self.adjusted.as_dict(ratio), "unadjusted_effect": self.unadjusted.as_dict(ratio),
            "prognostic_score_coefficient": self.score_coefficient,
            "rho_control": self.rho_control, "variance_reduction_factor": self.variance_reduction,
            "n_equivalent_unadjusted": self.n_equivalent_unadjusted,
            "empirical_variance_ratio": self.empirical_variance_ratio,
            "n_equivalent_unadjusted_empirical": self.n_equivalent_empirical,
        }


def _fit(y: np.ndarray, columns: list[np.ndarray], level: float) -> tuple[Estimate, np.ndarray]:
    """OLS with HC3 standard errors; the estimate of the first column after the intercept."""
    design = np.column_stack([np.ones_like(y), *columns])
    fit = sm.OLS(y, design).fit(cov_type="HC3", use_t=True)
    low, high = fit.conf_int(alpha=1.0 - level)[1]
    est = Estimate(float(fit.params[1]), float(fit.bse[1]), float(low), float(high), float(fit.pvalues[1]))
    return est, fit.params


def procova(outcome: np.ndarray, treated: np.ndarray, score: np.ndarray, *, scale: str = "linear",
            level: float = 0.95) -> ProcovaResult:
    """PROCOVA and unadjusted estimates of the treatment effect from one trial (arrays on the analysis
    scale; ``scale`` only labels them)."""
    y = np.asarray(outcome, dtype=float)
    t = np.asarray(treated, dtype=bool)
    s = np.asarray(score, dtype=float)
    if not (y.shape == t.shape == s.shape and y.ndim == 1):
        raise ValueError("outcome, treated and score must be 1-D arrays of one length")
    n_treatment = int(t.sum())
    n_control = y.size - n_treatment
    if min(n_control, n_treatment) < 2:
        raise ValueError("each arm needs at least two participants")
    if np.ptp(s[~t]) == 0:
        raise ValueError("the prognostic score is constant in the control arm")
    indicator = t.astype(float)
    adjusted, params = _fit(y, [indicator, s], level)
    unadjusted, _ = _fit(y, [indicator], level)
    rho = float(np.corrcoef(s[~t], y[~t])[0, 1])
    return ProcovaResult(
        n=y.size, n_control=n_control, n_treatment=n_treatment, scale=scale, level=level,
        adjusted=adjusted, unadjusted=unadjusted, score_coefficient=float(params[2]), rho_control=rho,
        empirical_variance_ratio=unadjusted.se**2 / adjusted.se**2,
    )


def analyse_trial(trial: Trial, *, log: bool = False, level: float = 0.95) -> ProcovaResult:
    """PROCOVA of a read trial; ``log`` analyses ln(outcome) on ln(score) (exposures)."""
    y, s = trial.outcome, trial.score
    if log:
        for values, what in ((y, f"column {OUTCOME}"), (s, "the prognostic score")):
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise PgxInputError(f"{what} is {values[bad[0]]:g}: --log needs positive values", source=trial.source,
                                    line=int(trial.lines[bad[0]]))
        y, s = np.log(y), np.log(s)
    return procova(y, trial.treated, s, scale="log" if log else "linear", level=level)


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; lines starting with '#' are comments."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PgxInputError("no such file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PgxInputError(f"cannot read: {exc}", source=source) from None
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([line]))]
        if header is None:
            header = fields
            duplicated = sorted({f for f in header if header.count(f) > 1})
            if duplicated:
                raise PgxInputError(f"column {duplicated[0]!r} appears twice", source=source, line=number)
            continue
        if len(fields) != len(header):
            raise PgxInputError(f"{len(fields)} fields where the header has {len(header)}", source=source, line=number)
        rows.append((number, dict(zip(header, fields))))
    if header is None:
        raise PgxInputError("empty file: expected a header row", source=source)
    return header, rows


def _number(row: dict[str, str], column: str, source: str, line: int, *, required: bool) -> float | None:
    text = row[column]
    if text == "":
        if required:
            raise PgxInputError(f"column {column}: missing value", source=source, line=line)
        return None
    try:
        value = float(text)
    except ValueError:
        raise PgxInputError(f"column {column}: {text!r} is not a number", source=source, line=line) from None
    if not math.isfinite(value):
        raise PgxInputError(f"column {column}: {text!r} is not a finite number", source=source, line=line)
    return value


def _gene_columns(header: list[str], source: str) -> dict[str, tuple[str | None, str | None]]:
    """Gene -> (phenotype column, diplotype column) from columns named GENE_phenotype / GENE_diplotype."""
    genes: dict[str, list[str | None]] = {}
    for column in header:
        for position, suffix in enumerate(GENE_SUFFIXES):
            if column.lower().endswith(suffix) and len(column) > len(suffix):
                gene = column[: -len(suffix)].upper()
                if not phenotype_names(gene):
                    raise PgxInputError(f"column {column}: unknown gene {gene}", source=source)
                genes.setdefault(gene, [None, None])[position] = column
    return {gene: (cols[0], cols[1]) for gene, cols in genes.items()}


def _patient(row: dict[str, str], genes: dict[str, tuple[str | None, str | None]], header: list[str],
             source: str, line: int) -> tuple[tuple, PatientFactors]:
    """Cache key and twin factors of one participant (empty cells: unknown)."""
    values = {field: _number(row, column, source, line, required=False)
              for column, field in COVARIATES.items() if column in header}
    sex = row.get(SEX, "").upper() or None
    comedications = tuple(sorted(c.strip().lower() for c in row.get(COMEDICATIONS, "").split(";") if c.strip()))
    given: dict[str, GeneInput] = {}
    texts = []
    for gene, columns in genes.items():
        # a diplotype says more than a phenotype (it gives the activity score too): it wins when both are given
        for column in reversed(columns):
            if column is not None and row[column]:
                try:
                    given[gene] = GeneInput.from_text(gene, row[column])
                except PgxInputError as exc:
                    raise PgxInputError(f"column {column}: {exc}", source=source, line=line) from None
                texts.append((gene, row[column].lower()))
                break
    try:
        patient = PatientFactors(sex=sex, genes=given, comedications=comedications, **values)
    except PgxInputError as exc:
        raise PgxInputError(str(exc), source=source, line=line) from None
    key = (tuple(sorted(values.items())), sex, comedications, tuple(texts))
    return key, patient


def _twin_scores(header: list[str], rows: list[tuple[int, dict[str, str]]], regimen: ControlRegimen,
                 source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Twin-predicted control outcome of every participant, one simulation per distinct patient."""
    genes = _gene_columns(header, source)
    model_genes = drug_model(regimen.drug).genes
    if model_genes and not set(genes) & set(model_genes):
        wanted = ", ".join(f"{g}_phenotype or {g}_diplotype" for g in model_genes)
        raise PgxInputError(f"no column tells the twin the genotype that drives {regimen.drug}: expected {wanted}",
                            source=source)
    cache: dict[tuple, tuple[float, tuple[str, ...]]] = {}
    scores = np.empty(len(rows))
    notes: dict[str, None] = {}
    for i, (line, row) in enumerate(rows):
        key, patient = _patient(row, genes, header, source, line)
        if key not in cache:
            try:
                cache[key] = regimen.predict(patient)
            except PgxInputError as exc:
                raise PgxInputError(str(exc), source=source, line=line) from None
        scores[i], individual_notes = cache[key]
        notes.update(dict.fromkeys(individual_notes))
    return scores, tuple(notes)


def read_trial(path: str | Path, *, regimen: ControlRegimen | None = None, control_arm: str = "control") -> Trial:
    """Read a trial CSV: ``participant_id``, ``arm``, ``outcome`` and either ``prognostic_score`` or, with
    ``regimen``, the twin's columns (GENE_phenotype / GENE_diplotype, age, sex, weight_kg, height_cm,
    crcl_ml_min, comedications separated by ';').  Every problem is a one-line :class:`PgxInputError`
    naming the file, line and column."""
    path = Path(path)
    source = str(path)
    header, rows = _rows(path)
    missing = [c for c in (ID, ARM, OUTCOME) if c not in header]
    if missing:
        raise PgxInputError(f"missing column(s) {', '.join(missing)} (header: {', '.join(header)})", source=source)
    if SCORE in header and regimen is not None:
        raise PgxInputError(f"has a {SCORE} column and a twin regimen was given: use one or the other", source=source)
    if SCORE not in header and regimen is None:
        raise PgxInputError(f"no {SCORE} column: add one, or describe the control regimen (--drug, --dose, --every,"
                            " --metric, --analyte) for the twin to predict it", source=source)
    seen: dict[str, int] = {}
    for line, row in rows:
        pid = row[ID]
        if not pid:
            raise PgxInputError(f"column {ID}: missing value", source=source, line=line)
        if pid in seen:
            raise PgxInputError(f"column {ID}: {pid!r} already on line {seen[pid]}", source=source, line=line)
        seen[pid] = line
    arms = _arms(rows, control_arm, source)
    treated = np.array([row[ARM].casefold() != control_arm.casefold() for _, row in rows])
    outcome = np.array([_number(row, OUTCOME, source, line, required=True) for line, row in rows], dtype=float)
    notes: tuple[str, ...] = ()
    if regimen is None:
        score = np.array([_number(row, SCORE, source, line, required=True) for line, row in rows], dtype=float)
        origin, what = SCORE, f"column {SCORE}"
    else:
        score, notes = _twin_scores(header, rows, regimen, source)
        origin, what = regimen.describe(), "the twin-predicted prognostic score"
    if np.ptp(score[~treated]) == 0:
        raise PgxInputError(
            f"{what} is the same ({score[~treated][0]:g}) for every control participant: it cannot predict anything"
            + (" (do the participants differ in the genotype or covariates the drug's model uses?)" if regimen else ""),
            source=source,
        )
    return Trial(source, tuple(seen), np.array([line for line, _ in rows]), arms[0], arms[1], treated, outcome,
                 score, origin, notes)


def _arms(rows: list[tuple[int, dict[str, str]]], control_arm: str, source: str) -> tuple[str, str]:
    """(control label, treatment label): exactly two arms, one of them the control, each big enough."""
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}
    for line, row in rows:
        label = row[ARM]
        if not label:
            raise PgxInputError(f"column {ARM}: missing value", source=source, line=line)
        counts[label.casefold()] = counts.get(label.casefold(), 0) + 1
        labels.setdefault(label.casefold(), label)
    if len(counts) != 2:
        found = ", ".join(labels.values()) or "none"
        raise PgxInputError(f"column {ARM}: expected exactly two arms, found {len(counts)} ({found})", source=source)
    if control_arm.casefold() not in counts:
        raise PgxInputError(f"column {ARM}: no arm named {control_arm!r} (arms: {', '.join(labels.values())})",
                            source=source)
    small = [f"{labels[k]} has {c}" for k, c in counts.items() if c < MIN_PER_ARM]
    if small:
        raise PgxInputError(f"column {ARM}: too few participants ({'; '.join(small)}; at least {MIN_PER_ARM} per arm)",
                            source=source)
    treatment = next(k for k in counts if k != control_arm.casefold())
    return labels[control_arm.casefold()], labels[treatment]


def report(trial: Trial, result: ProcovaResult) -> dict[str, object]:
    """What the command prints with --json: the trial, where its score came from and the analysis."""
    return {
        "file": trial.source, "control_arm": trial.control_arm, "treatment_arm": trial.treatment_arm,
        "prognostic_score": trial.score_origin, **result.as_dict(),
        "method": "PROCOVA: OLS of outcome on treatment indicator and prognostic score, HC3 standard errors"
                  " (Schuler 2021, doi:10.1515/ijb-2021-0072; EMA qualification opinion 2022, EMADOC-1700519818-907465)",
        "notes": list(trial.notes),
    }
