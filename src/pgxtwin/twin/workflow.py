"""Steps over one twin shared by the CLI (``pgxtwin twin ...``) and the REST API: patient factors
now, the individual posterior of a drug from the twin's levels, verdicts and regimen choice with
it, the ``estimate_recorded`` event after a new level, and the check of new events against the
twin before anything is written.

Times are UTC; hours since the first dose of the drug (h); doses mg; concentrations mg/L.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..pk.drug_model import PatientFactors
    from .estimation import EstimationResult
    from .evaluate import Evaluation
    from .regimen import RegimenChoice
    from .state import Event, TwinState

__all__ = ["current_regimens", "estimate_event", "evaluations", "factors", "hours", "individualise", "now",
           "recommend", "validate_events"]


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def hours(when: datetime, origin: datetime) -> float:
    return (when - origin).total_seconds() / 3600.0


def factors(state: TwinState, drug: str) -> PatientFactors:
    """Patient factors now, without the drug itself among its co-medications."""
    patient = state.patient_factors(now())
    return replace(patient, comedications=tuple(c for c in patient.comedications if c != drug))


def individualise(state: TwinState, drug: str) -> EstimationResult | None:
    """The Laplace posterior of ``drug`` from the twin's levels (None without levels or doses)."""
    from .estimation import estimate

    levels = state.concentrations(drug)
    doses = state.doses_of(drug)
    if not levels or not doses:
        return None
    origin = doses[0].time
    obs = [(hours(o.time, origin), o.lloq if o.blq else o.value, o.blq) for o in levels]
    return estimate(drug, factors(state, drug), [(hours(d.time, origin), d.amount_mg) for d in doses], obs)


def hla_typing(state: TwinState) -> dict[str, str]:
    """HLA gene -> its typing: a diplotype, or only the alleles known to be carried (e.g. a FHIR
    "HLA-B*15:02 positive")."""
    return {g: r.diplotypes[0] if r.diplotypes else "/".join(r.detected_alleles)
            for g, r in state.genotype.genes.items() if g.startswith("HLA-") and (r.diplotypes or r.detected_alleles)}


def evaluations(state: TwinState, todo: Sequence[tuple[str, str, float]]
                ) -> list[tuple[Evaluation, list[str], EstimationResult | None]]:
    """(evaluation, notes, posterior) per (drug, dose text, interval h) for this twin."""
    from .evaluate import evaluate_prescription

    hla = hla_typing(state)
    out = []
    for name, dose_text, tau in todo:
        posterior = individualise(state, name)
        notes = [] if posterior is None else [f"individualised from {posterior.n_observations} measured level(s)"]
        draws = None if posterior is None else posterior.parameter_draws(300)
        ev = evaluate_prescription(name, dose_text, tau, factors(state, name), hla=hla, parameter_draws=draws)
        out.append((ev, notes, posterior))
    return out


def current_regimens(state: TwinState) -> list[tuple[str, str, float]]:
    """(drug, dose text, interval h) of the current medications that have a regimen."""
    return [(m.drug, f"{m.regimen[-1].dose_mg} mg", m.regimen[-1].interval_h) for m in state.current_medications
            if m.regimen and m.regimen[-1].dose_mg and m.regimen[-1].interval_h]


def recommend(state: TwinState, drug: str) -> tuple[RegimenChoice, list[str]]:
    """The regimen with the highest probability of target attainment for this twin (the individual
    posterior when the drug's levels are known, else the prior) and notes on how it was reached."""
    from .regimen import choose_regimen

    posterior = individualise(state, drug)
    notes = [] if posterior is None else [f"individualised from {posterior.n_observations} measured level(s)"]
    draws = None if posterior is None else posterior.parameter_draws(300)
    return choose_regimen(drug, factors(state, drug), parameter_draws=draws), notes


def validate_events(state: TwinState, events: Sequence[Any]) -> list[Event]:
    """Parse ``events`` and apply them to ``state`` in memory: an invalid one raises
    :class:`~pgxtwin.twin.state.InvalidEventError` before anything is written."""
    from .state import apply, parse_event

    parsed = [parse_event(e) for e in events]
    check = state
    for event in parsed:
        check = apply(check, event)
    return parsed


def estimate_event(state: TwinState, drug: str) -> tuple[dict[str, Any] | None, EstimationResult | None]:
    """The ``estimate_recorded`` event of ``drug``'s individual posterior from all its levels, and
    the posterior; (None, None) without levels or doses.  Raises
    :class:`~pgxtwin.errors.PgxInputError` when the drug cannot be individualised."""
    from ..knowledge.drugs import library_digest

    posterior = individualise(state, drug)
    if posterior is None or not posterior.parameter_names:
        return None, None
    cov = (np.asarray(posterior.covariance) + np.asarray(posterior.covariance).T) / 2.0
    event = {
        "type": "estimate_recorded",
        "posterior": {
            "drug": drug, "parameters": list(posterior.parameter_names), "mode": [float(v) for v in posterior.eta],
            "covariance": cov.tolist(), "library_digest": library_digest(), "estimated_at": now().isoformat(),
            "based_on_version": state.version, "method": "MAP + Laplace (pgxtwin.twin.estimation)",
            "n_observations": posterior.n_observations,
        },
    }
    return event, posterior
