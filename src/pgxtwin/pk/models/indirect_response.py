"""Indirect-response (turnover) PD models, Jusko types I–IV, and the warfarin -> INR transit structure.

Turnover: dR/dt = kin·(1 ± drug(C)) - kout·(1 ± drug(C))·R, with R(0) = kin/kout (baseline), where the
drug acts on production (kin) or loss (kout) by inhibition (Imax·C^h/(IC50^h + C^h), Imax ≤ 1) or
stimulation (Emax·C^h/(EC50^h + C^h)). :class:`WarfarinINR` is the Hamberg et al. 2007 structure
(Clin Pharmacol Ther 81:529): inhibited production of clotting-factor activity through two parallel
transit chains, INR = BASE + INRmax·(1 - A6·A7)^λ. Only structures live here; callers supply values.
"""

from __future__ import annotations

from enum import Enum

import torch

from pgxtwin.pk.models.base import Array, Model, Params, ParamSpec, PDModel, namespace
from pgxtwin.pk.models.effect_compartment import sigmoid_emax

__all__ = ["IndirectResponse", "TurnoverType", "WarfarinINR"]


class TurnoverType(str, Enum):
    """Where the drug acts (Jusko's indirect-response models I–IV)."""

    INHIBIT_PRODUCTION = "inhibit_production"  # I
    INHIBIT_LOSS = "inhibit_loss"  # II
    STIMULATE_PRODUCTION = "stimulate_production"  # III
    STIMULATE_LOSS = "stimulate_loss"  # IV


KIN = ParamSpec("kin", "response units/h", "zero-order production rate of the response")
KOUT = ParamSpec("kout", "1/h", "first-order loss rate constant of the response")
IMAX = ParamSpec("imax", "-", "maximal fractional inhibition", default=1.0, upper=1.0)
EMAX = ParamSpec("emax", "-", "maximal fractional stimulation")
C50 = ParamSpec("ec50", "mg/L", "concentration at half-maximal drug action")
HILL = ParamSpec("hill", "-", "sigmoidicity (Hill coefficient)", default=1.0)


class IndirectResponse(PDModel):
    """Turnover response "response" (baseline kin/kout) driven by the PK ``driver`` concentration."""

    pd_analytes = ("response",)
    pd_state_names = ("response",)

    def __init__(self, pk: Model, kind: TurnoverType | str, driver: str | None = None) -> None:
        self.kind = TurnoverType(kind)
        super().__init__(pk, driver)

    @property
    def _inhibits(self) -> bool:
        return self.kind in (TurnoverType.INHIBIT_PRODUCTION, TurnoverType.INHIBIT_LOSS)

    @property
    def pd_parameters(self) -> tuple[ParamSpec, ...]:
        return (KIN, KOUT, IMAX if self._inhibits else EMAX, C50, HILL)

    def pd_initial_state(self, p: Params, n: int) -> torch.Tensor:
        return (p["kin"] / p["kout"]).expand(n)[:, None].clone()

    def pd_rhs(self, y: torch.Tensor, conc: torch.Tensor, p: Params) -> torch.Tensor:
        if self._inhibits:
            factor = 1 - sigmoid_emax(conc, p["imax"], p["ec50"], p["hill"])
        else:
            factor = 1 + sigmoid_emax(conc, p["emax"], p["ec50"], p["hill"])
        on_production = self.kind in (TurnoverType.INHIBIT_PRODUCTION, TurnoverType.STIMULATE_PRODUCTION)
        kin = p["kin"] * factor if on_production else p["kin"]
        kout = p["kout"] if on_production else p["kout"] * factor
        return (kin - kout * y[:, 0])[:, None]

    def pd_observe(self, y: Array, conc: Array, p: Params) -> dict[str, Array]:
        return {"response": y[..., 0]}


MTT1 = ParamSpec("mtt1", "h", "mean transit time of the 6-compartment chain")
MTT2 = ParamSpec("mtt2", "h", "mean transit time of the 1-compartment chain")
BASE = ParamSpec("base_inr", "-", "baseline INR")
INRMAX = ParamSpec("inr_max", "-", "maximal INR increase")
LAMBDA = ParamSpec("lam", "-", "shape factor λ of the INR response")


class WarfarinINR(PDModel):
    """Hamberg 2007 warfarin PD: E = 1 - Emax·C^γ/(EC50^γ + C^γ) (C: S-warfarin, mg/L) drives
    dA1/dt = ktr1·(E - A1), dAi/dt = ktr1·(A(i-1) - Ai) for i = 2..6, dA7/dt = ktr2·(E - A7),
    with ktr1 = 6/MTT1, ktr2 = 1/MTT2 and all Ai = 1 at baseline; INR = BASE + INRmax·(1 - A6·A7)^λ.
    """

    pd_analytes = ("inr",)
    pd_state_names = tuple(f"a{i}" for i in range(1, 8))

    @property
    def pd_parameters(self) -> tuple[ParamSpec, ...]:
        return (IMAX, C50, HILL, MTT1, MTT2, BASE, INRMAX, LAMBDA)

    def pd_initial_state(self, p: Params, n: int) -> torch.Tensor:
        return torch.ones(n, 7, dtype=torch.float64, device=p["mtt1"].device)

    def pd_rhs(self, y: torch.Tensor, conc: torch.Tensor, p: Params) -> torch.Tensor:
        e = 1 - sigmoid_emax(conc, p["imax"], p["ec50"], p["hill"])
        ktr1, ktr2 = (6 / p["mtt1"])[:, None], 1 / p["mtt2"]
        upstream = torch.cat([e[:, None], y[:, :5]], dim=1)  # inputs of A1..A6
        chain1 = ktr1 * (upstream - y[:, :6])
        chain2 = ktr2 * (e - y[:, 6])
        return torch.cat([chain1, chain2[:, None]], dim=1)

    def pd_observe(self, y: Array, conc: Array, p: Params) -> dict[str, Array]:
        xp = namespace(y)
        deficit = xp.clip(1 - y[..., 5] * y[..., 6], 0, None)  # clip: round-off must not give NaN powers
        return {"inr": p["base_inr"] + p["inr_max"] * deficit ** p["lam"]}
