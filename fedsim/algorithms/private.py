"""Private model values (MTFL's patches, FedPer's personal layers): which keys stay on a device.

``private`` chooses BatchNorm values: ``none`` (plain FL), ``mu_sigma`` (the running mean and
variance, and the batch counter), ``gamma_beta`` (the affine weight and bias) or ``all``.
``private_layers`` names modules (``state_dict`` prefixes, e.g. ``"5"``) all of whose values
stay private. A private value is never uploaded (nor downloaded: it is not in the payload,
so the bytes shrink); each device keeps its own copy in its host between rounds, starts
from it, and is evaluated (UA) with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Private = Literal["none", "mu_sigma", "gamma_beta", "all"]
_BN_KEYS = {
    "none": (),
    "mu_sigma": ("running_mean", "running_var", "num_batches_tracked"),
    "gamma_beta": ("weight", "bias"),
    "all": ("running_mean", "running_var", "num_batches_tracked", "weight", "bias"),
}


def private_keys(model: nn.Module, private: Private, layers: Sequence[str] = ()) -> frozenset[str]:
    """Return the ``state_dict`` keys of ``model`` that stay on the device.

    Raises
    ------
    ValueError
        A name of ``layers`` is not a module of the model.
    """
    keys = set(model.state_dict())
    out: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            out |= {f"{name}.{k}" for k in _BN_KEYS[private]} & keys
    modules = dict(model.named_modules())
    for layer in layers:
        if layer not in modules or not layer:
            known = ", ".join(n for n in modules if n)
            raise ValueError(f"private_layers: no module {layer!r} in the model (it has {known})")
        out |= {k for k in keys if k.startswith(f"{layer}.")}
    return frozenset(out)
