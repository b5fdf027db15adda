"""Concentration-time plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_write  # noqa: E402
from ..pk.scenarios import Simulation  # noqa: E402


def concentration_plot(sim: Simulation, path: str | Path) -> Path:
    """Median and 90% interval per analyte against the therapeutic window; written atomically."""
    from ..knowledge.drugs import load_drug

    drug = load_drug(sim.drug)
    analytes = list(sim.curves)
    fig, axes = plt.subplots(len(analytes), 1, figsize=(8, 3.2 * len(analytes)), squeeze=False)
    window = drug.therapeutic_window
    for ax, name in zip(axes[:, 0], analytes):
        curve = sim.curves[name]
        q05, q50, q95 = np.quantile(curve, [0.05, 0.5, 0.95], axis=0)
        if curve.shape[0] > 1:
            ax.fill_between(sim.times_h, q05, q95, alpha=0.25, label="90% interval")
        ax.plot(sim.times_h, q50, lw=1.8, label="median" if curve.shape[0] > 1 else "typical patient")
        if window is not None and window.unit == "mg/L" and window.analyte in (None, name) and name == analytes[0]:
            low, high = window.low or 0.0, window.high
            ax.axhspan(low, high if high is not None else ax.get_ylim()[1], color="green", alpha=0.08,
                       label=f"therapeutic window ({window.metric})")
        ax.set_ylabel(f"{name} (mg/L)")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (h)")
    fig.suptitle(f"{sim.drug} (n={sim.n})")
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    target = atomic_write(path, buffer.getvalue())
    return target
