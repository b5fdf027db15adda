"""The compiled right-hand sides of the models that have one, behind one dispatch by ``kernel_id``.

numba caches compiled code per function and argument types. A kernel passed to the solver loop as a
function value is typed by its identity, which changes from process to process, so the loop would be
compiled anew (~14 s) in every process. Called here by name, from one function taking an integer id,
the loop and the kernels are compiled once and loaded from numba's cache afterwards. A model with a
compiled kernel writes it in its own module (``kernel(x, p, out)``: d(core state)/dt without inputs
into out[:S] for state-major x (≥ S, N), parameters p (P, N) in the model's ``parameters`` order),
sets ``kernel_id`` and is added to :func:`rhs`.
"""

from __future__ import annotations

import numba

from pgxtwin.pk.models.michaelis_menten import MichaelisMenten
from pgxtwin.pk.models.michaelis_menten import kernel as _michaelis_menten

__all__ = ["rhs"]

_MICHAELIS_MENTEN = MichaelisMenten.kernel_id


@numba.njit(cache=True)
def rhs(kernel_id, x, p, out):  # pragma: no cover - compiled
    if kernel_id == _MICHAELIS_MENTEN:
        _michaelis_menten(x, p, out)
    else:
        raise ValueError("no compiled kernel with this id")
