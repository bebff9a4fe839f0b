"""Batched user-model accuracy: shared model and stacked device models against one-by-one."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.runtime.evaluation import shared_model_accuracies, stacked_model_accuracies
from fedsim.runtime.nodes import evaluate_state


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 5))


def _data(n: int = 3000) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :5].argmax(1) + (torch.rand(n, generator=g) < 0.3).long()) % 5
    rng = np.random.default_rng(0)
    sizes = [0, 1, 7, 40, 333, 900]
    idx = [np.sort(rng.choice(n, size=s, replace=False)).astype(np.int64) for s in sizes]
    return x, y, idx


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = _model()
    with torch.no_grad():
        m[2].running_mean.normal_()
        m[2].running_var.uniform_(0.5, 2.0)
    return {k: v.clone() for k, v in m.state_dict().items()}


def _one_by_one(state: dict[str, torch.Tensor], x, y, idx: np.ndarray) -> float:
    t = torch.from_numpy(idx)
    correct, _ = evaluate_state(_model(), state, x[t], y[t])
    return correct / max(1, len(idx))


def test_shared_model_matches_one_by_one_and_ignores_company() -> None:
    x, y, idx = _data()
    state = _state(1)
    batched = shared_model_accuracies(_model(), state, x, y, idx, block_rows=256)
    expected = [_one_by_one(state, x, y, i) for i in idx]
    assert batched == expected  # 2-layer MLP at this size: no rounding ties
    assert batched[0] == 0.0  # a device without test rows
    # a device's value does not depend on which devices are evaluated with it
    for i in range(len(idx)):
        assert shared_model_accuracies(_model(), state, x, y, [idx[i]], 256) == [batched[i]]


def test_stacked_models_match_one_by_one() -> None:
    x, y, idx = _data()
    states = [_state(s) for s in range(len(idx))]
    stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    batched = stacked_model_accuracies(_model(), stacked, x, y, idx)
    expected = [_one_by_one(s, x, y, i) for s, i in zip(states, idx, strict=True)]
    assert np.allclose(batched, expected, atol=1.5 / 333)  # at most a tie flip on big devices
    assert len(set(expected)) > 3  # the models really differ


def test_global_scores_split_over_hosts_combine_to_the_same_bits() -> None:
    from fedsim.runtime.evaluation import block_scores, combine_scores, num_blocks

    x, y, _ = _data(2500)
    state = _state(3)
    n = num_blocks(2500, 256)
    assert n == 10
    whole = combine_scores(block_scores(_model(), state, x, y, range(n), 256), 2500)
    parts = {h: block_scores(_model(), state, x, y, list(range(h, n, 3)), 256) for h in range(3)}
    split = combine_scores([parts[b % 3][b // 3] for b in range(n)], 2500)
    assert whole == split
    correct, loss_sum = evaluate_state(_model(), state, x, y)
    assert whole[0] == correct / 2500  # the loss differs by float32 summation order only
    assert abs(whole[1] - loss_sum / 2500) < 1e-6 * abs(whole[1])
