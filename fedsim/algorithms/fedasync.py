"""FedAsync's server step (Xie et al. 2019): mix one arriving model into the server's model.

x ← (1 - c) x + c x_update, with c = α s(τ) decided by the driver (``fedsim.sim.staleness``).
Computed elementwise in the model's dtype by ``torch.lerp`` (x + c (x_update - x)), one pass
over the model per update; elementwise arithmetic does not depend on threads or on the
order of anything, so the result depends only on the two models and ``c``.
"""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def mix(state: State, update: State, coefficient: float) -> State:
    """Return ``(1 - c) state + c update`` for the keys ``update`` carries; others as ``state``.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        The server's model (not modified).
    update : dict of str to torch.Tensor
        The arriving model's uploaded tensors.
    coefficient : float
        The mixing weight c in (0, 1].
    """
    out = dict(state)
    for key, value in update.items():
        x = state[key]
        out[key] = torch.lerp(x, value.to(x.dtype), coefficient)
    return out
