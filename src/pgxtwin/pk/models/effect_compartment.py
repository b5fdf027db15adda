"""Effect-compartment (biophase) PD: dCe/dt = ke0·(C - Ce), effect = E0 + Emax·Ce^h/(EC50^h + Ce^h).

Ce is linear in C, so with a linear PK model it has a closed form (C's impulse response convolved
with ke0·e^{-ke0 s}); the sigmoid Emax step is applied afterwards.
"""

from __future__ import annotations

import torch

from pgxtwin.pk.dosing import Route
from pgxtwin.pk.models.base import Array, Params, ParamSpec, PDModel, SumExp, namespace

__all__ = ["EffectCompartment"]

KE0 = ParamSpec("ke0", "1/h", "effect-site equilibration rate constant")
E0 = ParamSpec("e0", "effect units", "baseline effect", default=0.0, lower=float("-inf"))
EMAX = ParamSpec("emax", "effect units", "maximal drug effect (negative for a decrease)", lower=float("-inf"))
EC50 = ParamSpec("ec50", "mg/L", "effect-site concentration at half-maximal effect")
HILL = ParamSpec("hill", "-", "sigmoidicity (Hill coefficient)", default=1.0)


def sigmoid_emax(c: Array, emax: Array, ec50: Array, hill: Array) -> Array:
    """Emax·c^h/(EC50^h + c^h), with c clipped at 0 (solver round-off must not give NaN powers)."""
    xp = namespace(c, emax)
    ch = xp.clip(c, 0, None) ** hill
    return emax * ch / (ec50**hill + ch)


class EffectCompartment(PDModel):
    """Wraps a PK model; adds analytes "ce" (mg/L) and "effect". Parameters: ke0, e0, emax, ec50, hill."""

    pd_analytes = ("ce", "effect")
    pd_state_names = ("ce",)

    @property
    def pd_parameters(self) -> tuple[ParamSpec, ...]:
        return (KE0, E0, EMAX, EC50, HILL)

    @property
    def has_closed_form(self) -> bool:
        return self.pk.has_closed_form

    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]:
        resp = self.pk.impulse_response(p, route)
        ke0 = p["ke0"]
        return resp | {"ce": resp[self.driver].convolve(SumExp.single(ke0, ke0))}

    def transform(self, conc: dict[str, Array], p: Params) -> dict[str, Array]:
        # closed-form path: conc holds (N, T) arrays, parameters (N,) broadcast along time
        q = {k: v[:, None] for k, v in p.items()}
        return conc | {"effect": q["e0"] + sigmoid_emax(conc["ce"], q["emax"], q["ec50"], q["hill"])}

    def pd_rhs(self, y: torch.Tensor, conc: torch.Tensor, p: Params) -> torch.Tensor:
        return (p["ke0"] * (conc - y[:, 0]))[:, None]

    def pd_observe(self, y: Array, conc: Array, p: Params) -> dict[str, Array]:
        ce = y[..., 0]
        return {"ce": ce, "effect": p["e0"] + sigmoid_emax(ce, p["emax"], p["ec50"], p["hill"])}
