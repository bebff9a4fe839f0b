"""The inline runtime trains lazily, a block at a time, in the order the edge reads."""

from __future__ import annotations

import torch
from helpers import REPO

from fedsim.config import load_scenario
from fedsim.prepare import check, device_partitions, make_runtime
from fedsim.runtime.inline import InlineRuntime


def _runtime(block_size: int) -> InlineRuntime:
    sc = load_scenario(REPO / "scenarios" / "quickstart.yaml", ["runtime.vectorize=true"])
    prep = check(sc)
    runtime = make_runtime(prep, device_partitions(prep))
    assert isinstance(runtime, InlineRuntime)
    runtime._block_size = block_size
    return runtime


def _record_calls(runtime: InlineRuntime) -> list[list[int]]:
    calls: list[list[int]] = []
    train = runtime._host.train

    def recording(base, round_index, device_ids):
        calls.append(list(device_ids))
        return train(base, round_index, device_ids)

    runtime._host.train = recording  # type: ignore[method-assign]
    return calls


def test_blocks_follow_read_order_and_skip_unread_devices() -> None:
    runtime = _runtime(block_size=3)
    calls = _record_calls(runtime)
    handles = runtime.train(0, 0, [0, 1, 2, 3, 4, 5, 6, 7])
    assert calls == []  # nothing runs before a read
    order = [handles[i] for i in (6, 2, 7, 0, 5)]  # arrival order; devices 1, 3, 4 discarded
    runtime.aggregate_edge(0, order)
    assert calls == [[6, 2, 7], [0, 5]]


def test_block_size_does_not_change_a_bit_of_the_edge_model() -> None:
    models = []
    for block_size in (1, 3, 32):
        runtime = _runtime(block_size)
        handles = runtime.train(0, 0, list(range(10)))
        runtime.aggregate_edge(0, handles[::-1])
        models.append(runtime._edges[0].model())
    for other in models[1:]:
        assert all(torch.equal(models[0][k], other[k]) for k in models[0])
