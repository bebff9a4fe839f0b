"""FedBuff's server step (Nguyen et al. 2022): apply a buffer of updates as one step.

x ← x + Σ_i c_i (x_i - base_i), with c_i = η s(τ_i) / K decided by the driver
(``fedsim.sim.staleness``): the server learning rate times the mean of the buffer's
staleness-weighted deltas. Each delta is formed and added in float64, in buffer (arrival)
order, and the sum rounded once to the model's dtype.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

State = dict[str, torch.Tensor]


def apply_buffer(state: State, items: Iterable[tuple[State, State, float]]) -> State:
    """Return ``state`` plus the weighted deltas of the buffered updates.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        The server's model (not modified).
    items : iterable of (update, base, coefficient)
        Each update's uploaded tensors, the model it was trained from, and c_i; read once,
        in order.
    """
    acc: dict[str, torch.Tensor] = {}
    for update, base, coefficient in items:
        for key, value in update.items():
            if key not in acc:
                acc[key] = torch.zeros_like(value, dtype=torch.float64)
            delta = value.to(torch.float64) - base[key].to(torch.float64)
            acc[key].add_(delta, alpha=coefficient)
    out = dict(state)
    for key, total in acc.items():
        x = state[key]
        out[key] = total.add_(x).to(x.dtype)
    return out
