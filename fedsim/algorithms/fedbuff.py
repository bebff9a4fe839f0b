"""FedBuff's server step (Nguyen et al. 2022): apply a buffer of updates as one step.

x ← x + Σ_i c_i (x_i - base_i), with c_i = η s(τ_i) / K decided by the driver
(``fedsim.sim.staleness``): the server learning rate times the mean of the buffer's
staleness-weighted deltas. The updates are added (weighted) into float64 accumulators in
buffer (arrival) order, then each distinct base once with its updates' summed weight (bases
in order of first appearance), and the sum rounded once to the model's dtype.
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
    bases: dict[int, tuple[State, float]] = {}  # base models by identity: their summed weight
    for update, base, coefficient in items:
        for key, value in update.items():
            if key not in acc:
                acc[key] = torch.zeros_like(value, dtype=torch.float64)
            # float32 promoted to float64 inside the add: exact, no temporary copy
            acc[key].add_(value, alpha=coefficient)
        seen = bases.get(id(base))
        bases[id(base)] = (base, coefficient + (seen[1] if seen is not None else 0.0))
    for base, weight in bases.values():  # updates sharing a base subtract it once
        for key, total in acc.items():
            total.sub_(base[key], alpha=weight)
    out = dict(state)
    for key, total in acc.items():
        x = state[key]
        out[key] = total.add_(x).to(x.dtype)
    return out
