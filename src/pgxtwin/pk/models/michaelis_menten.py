"""One-compartment model with saturable Michaelis–Menten elimination (phenytoin, voriconazole).

dA/dt = -Vmax·C/(Km + C) (+ inputs), C = A/V. For C ≪ Km it is linear with CL = Vmax/Km.
"""

from __future__ import annotations

import torch

from pgxtwin.pk.models.base import ABSORPTION, Array, NonlinearPKModel, Params, ParamSpec

__all__ = ["MichaelisMenten"]

VMAX = ParamSpec("vmax", "mg/h", "maximum elimination rate")
KM = ParamSpec("km", "mg/L", "concentration at half-maximal elimination rate")
V = ParamSpec("v", "L", "volume of distribution")


class MichaelisMenten(NonlinearPKModel):
    """Parameters: vmax, km, v (+ ka, f, tlag for oral). Analyte "parent"."""

    analytes = ("parent",)
    state_names = ("central",)
    #: rhs and elimination_rate are plain arithmetic, valid on numpy arrays too: the ODE path runs in
    #: numpy when no gradient is needed (see pk/_ode.py). A subclass using torch functions there must reset it.
    numpy_rhs = True
    kernel_id = 1  # its compiled right-hand side: pk/_ode_compiled.py

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        return (VMAX, KM, V, *ABSORPTION)

    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        return -self.elimination_rate(x, p)[:, None]

    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        return {"parent": x[..., 0] / p["v"]}

    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        c = x[:, 0] / p["v"]
        return p["vmax"] * c / (p["km"] + c)
