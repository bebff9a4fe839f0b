"""Local optimisers on stacked devices: the same bits as each device alone."""

from __future__ import annotations

import pytest
import torch

from fedsim.runtime.optim import STEP_KEY, VECTOR_ALIGN, LocalAdam, moment_keys

#: per-device shapes: two stepped whole when stacked (multiples of VECTOR_ALIGN), three not
SHAPES = {"w1": (200, 784), "w2": (VECTOR_ALIGN,), "b1": (200,), "b2": (10,), "odd": (3, 7)}


def _device_state(gen: torch.Generator, devices: int) -> dict[str, torch.Tensor]:
    state = {}
    for name, shape in SHAPES.items():
        state[name] = torch.randn(devices, *shape, generator=gen)
        m_key, v_key = moment_keys(name)
        state[m_key] = torch.randn(devices, *shape, generator=gen)
        state[v_key] = torch.rand(devices, *shape, generator=gen)
    return state


@pytest.mark.parametrize("steps", ["equal", "different"])
@pytest.mark.parametrize("threads", [1, 2])
def test_stacked_adam_step_equals_each_device_alone(steps: str, threads: int) -> None:
    gen = torch.Generator().manual_seed(3)
    devices = 5
    stacked = _device_state(gen, devices)
    grads = {n: torch.randn(devices, *s, generator=gen) for n, s in SHAPES.items()}
    counts = [7.0] * devices if steps == "equal" else [7.0, 7.5, 3.0, 7.0, 1.0]
    stacked[STEP_KEY] = torch.tensor(counts, dtype=torch.float64)
    alone = [{k: v[i].clone() for k, v in stacked.items()} for i in range(devices)]
    opt = LocalAdam(lr=0.003, local_epochs=1, batch_size=20)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        opt.step({n: stacked[n] for n in SHAPES}, grads, stacked)
        for i, state in enumerate(alone):
            opt.step({n: state[n] for n in SHAPES}, {n: g[i] for n, g in grads.items()}, state)
    finally:
        torch.set_num_threads(before)
    for i, state in enumerate(alone):
        for key, value in state.items():
            assert torch.equal(stacked[key][i], value), (key, i)
    assert stacked[STEP_KEY].tolist() == [c + 1 for c in counts]
