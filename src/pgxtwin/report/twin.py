"""What the twin's HTML report shows beside the twin itself: the verdicts of its current
medications and one concentration-time curve per evaluated drug (mg/L over h since the first dose)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..twin.workflow import current_regimens, evaluations, factors, hours, now
from .html import CurveData, curve_from_simulation

if TYPE_CHECKING:
    from ..twin.evaluate import Evaluation
    from ..twin.state import TwinState

__all__ = ["report_inputs"]


def report_inputs(state: TwinState) -> tuple[list[Evaluation], dict[str, CurveData]]:
    """Verdicts of the current medications and, per evaluated drug, the individual posterior curve
    when levels are known, else the population prior for this patient (300 virtual patients)."""
    from ..pk.scenarios import simulate_regimen

    results = evaluations(state, current_regimens(state))
    curves: dict[str, CurveData] = {}
    for ev, _, posterior in results:
        if ev.exposure is None:
            continue
        target = ev.exposure.target
        doses = state.doses_of(ev.drug)
        origin = doses[0].time if doses else now()
        dose_times = [hours(d.time, origin) for d in doses]
        levels = [c for c in state.concentrations(ev.drug) if (c.analyte or ev.drug) == target.analyte or c.analyte is None]
        observed = ([hours(c.time, origin) for c in levels if not c.blq], [c.value for c in levels if not c.blq])
        if posterior is not None:
            horizon = (dose_times[-1] if dose_times else 0.0) + 2 * ev.interval_h
            grid = np.linspace(0.0, horizon, 400)
            pred = posterior.predict(grid)
            curves[ev.drug] = CurveData(
                ev.drug, target.analyte, grid, pred["map"], pred["p05_without_residual_error"],
                pred["p95_without_residual_error"], target.low, target.high, *observed, dose_times,
                window_label=f"target ({target.metric})", source="individual posterior (Laplace)",
            )
        else:
            days = max(2.0, (dose_times[-1] / 24.0 + 1.0) if dose_times else 7.0)
            sim = simulate_regimen(ev.drug, factors(state, ev.drug), dose=f"{ev.dose_mg} mg", every_h=ev.interval_h,
                                   days=days, n=300)
            curves[ev.drug] = curve_from_simulation(
                sim, target.analyte, window=(target.low, target.high), window_label=f"target ({target.metric})",
                observed_times=observed[0], observed_values=observed[1], dose_times=dose_times,
                source="prior (population model for this patient)",
            )
    return [ev for ev, _, _ in results], curves
