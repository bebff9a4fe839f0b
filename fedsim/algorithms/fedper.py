"""FedPer (Arivazhagan et al. 2019; PerFit Fig. 2b): base layers federated, head layers private.

Devices train the whole model with FedAvg's local SGD; the *personalisation layers* (by
default the model's last module with parameters, the classifier) never leave the device:
they are not uploaded, not downloaded, persist per device in its host between rounds and
make each device's user model (UA). Only the base layers travel, so the bytes shrink by
the personal layers' size. Built on FedAvg's private-value mechanism
(:mod:`fedsim.algorithms.private`).
"""

from __future__ import annotations

import torch
from pydantic import Field

from fedsim.algorithms.fedavg import FedAvg, FedAvgParams
from fedsim.algorithms.private import private_keys


def last_layer(model: torch.nn.Module) -> str:
    """Return the name of ``model``'s last module that holds parameters of its own."""
    names = [
        n for n, m in model.named_modules() if n and next(m.parameters(False), None) is not None
    ]
    if not names:
        raise ValueError("personal_layers: the model has no module with parameters")
    return names[-1]


class FedPerParams(FedAvgParams):
    """FedPer's parameters: FedAvg's, and ``personal_layers``.

    ``personal_layers``: module names (``state_dict`` prefixes, e.g. ``"5"`` in a
    ``Sequential``) kept on the devices; empty (the default) means the model's last module
    with parameters. ``private`` (BatchNorm values) may be combined with it.
    """

    personal_layers: list[str] = Field(default_factory=list)


class FedPer(FedAvg):
    """FedAvg whose devices keep their personalisation layers."""

    Params = FedPerParams
    params: FedPerParams

    def bind(self, model: torch.nn.Module) -> None:
        """Keep the personal layers (and any ``private``/``private_layers``) on devices."""
        layers = self.params.personal_layers or [last_layer(model)]
        both = [*layers, *self.params.private_layers]
        self.private = private_keys(model, self.params.private, both)
