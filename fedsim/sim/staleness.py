"""Staleness: how much an asynchronous update counts, given the versions applied since its base."""

from __future__ import annotations

from fedsim.config_rounds import ServerRuleSpec, StalenessSpec


def staleness_factor(spec: StalenessSpec, staleness: int) -> float:
    """Return s(τ) (Xie et al. 2019).

    ``constant``: 1; ``polynomial``: (τ + 1)^-a; ``hinge``: 1 up to b, then
    1 / (a (τ - b) + 1).
    """
    if spec.kind == "constant":
        return 1.0
    if spec.kind == "polynomial":
        return float((staleness + 1) ** -spec.a)
    if staleness <= spec.b:
        return 1.0
    return 1.0 / (spec.a * (staleness - spec.b) + 1.0)


def coefficient(rule: ServerRuleSpec, staleness: int) -> float:
    """Return the weight an update of staleness τ gets at a server with ``rule``.

    ``fedasync``: the mixing weight α s(τ). ``fedbuff``: η s(τ) / K, the update's share
    of the buffer's step.
    """
    s = staleness_factor(rule.staleness, staleness)
    if rule.kind == "fedasync":
        return rule.alpha * s
    return rule.server_lr * s / rule.buffer_size
