"""Evaluation on test rows in fixed blocks: the global model, and many devices' user models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedsim.runtime.optim import model_part

State = dict[str, Tensor]

#: Test rows per forward pass. Blocks are cut at fixed absolute positions of the test set, so
#: a row's logits never depend on which other devices a host happens to evaluate.
EVAL_BLOCK_ROWS = 1024


def num_blocks(num_rows: int, block_rows: int = EVAL_BLOCK_ROWS) -> int:
    """Return how many fixed blocks ``num_rows`` test rows make."""
    return -(-num_rows // block_rows)


def _block_logits(
    model: nn.Module, state: State, x: Tensor, blocks: Sequence[int], block_rows: int
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(first row, end row, logits)`` of ``state`` for each block, in eval mode."""
    model.load_state_dict(model_part(state))  # optimiser values (FedAvg-Adam's) are not the model's
    model.eval()
    with torch.no_grad():
        for b in blocks:
            lo, hi = b * block_rows, min(int(x.shape[0]), (b + 1) * block_rows)
            yield lo, hi, model(x[lo:hi])


def block_scores(
    model: nn.Module,
    state: State,
    x: Tensor,
    y: Tensor,
    blocks: Sequence[int],
    block_rows: int = EVAL_BLOCK_ROWS,
) -> list[tuple[int, float]]:
    """Return (number correct, summed cross-entropy) of ``state`` on each given block.

    Block ``b`` is rows ``[b * block_rows, (b + 1) * block_rows)`` of ``x``/``y``. A block's
    figures depend only on the model and its rows, so blocks can be scored in any process
    and combined with :func:`combine_scores`.
    """
    out = []
    for lo, hi, logits in _block_logits(model, state, x, blocks, block_rows):
        yb = y[lo:hi]
        loss = float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
        out.append((int((logits.argmax(dim=1) == yb).sum()), loss))
    return out


def combine_scores(scores: Sequence[tuple[int, float]], num_rows: int) -> tuple[float, float]:
    """Return accuracy and mean loss from every block's scores, given in block order."""
    correct, loss_sum = 0, 0.0
    for c, loss in scores:  # in block order, so the float sum never depends on who scored
        correct += c
        loss_sum += loss
    return correct / num_rows, loss_sum / num_rows


def shared_model_accuracies(
    model: nn.Module,
    state: State,
    x: Tensor,
    y: Tensor,
    test_idx: Sequence[np.ndarray],
    block_rows: int = EVAL_BLOCK_ROWS,
) -> list[float]:
    """Return each device's accuracy of one model (``state``) on its own test rows.

    Instead of one small forward pass per device, the test set is cut into fixed blocks of
    ``block_rows`` rows; every block holding a row some device needs is evaluated once, and
    each device's accuracy is read off the per-row correctness. The result of a device
    depends only on the model and its rows, never on which devices are evaluated with it.

    Parameters
    ----------
    model : torch.nn.Module
        Scratch model of the right architecture (it is loaded with ``state``).
    state : dict of str to torch.Tensor
        The model every device uses (FedAvg's user model is the global model).
    x, y : torch.Tensor
        The test samples and labels; ``test_idx`` index rows of them.
    test_idx : sequence of numpy.ndarray
        Each device's test rows.
    block_rows : int
        Rows per forward pass.

    Returns
    -------
    list of float
        Accuracy per device, in the order of ``test_idx`` (0 for a device without rows).
    """
    correct = np.zeros(int(x.shape[0]), dtype=bool)
    nonempty = [idx for idx in test_idx if len(idx)]
    if nonempty:
        blocks = np.unique(np.concatenate(nonempty) // block_rows).tolist()
        for lo, hi, logits in _block_logits(model, state, x, blocks, block_rows):
            correct[lo:hi] = (logits.argmax(dim=1) == y[lo:hi]).numpy()
    return [float(correct[idx].sum()) / max(1, len(idx)) for idx in test_idx]


def stacked_model_accuracies(
    model: nn.Module,
    states: State,
    x: Tensor,
    y: Tensor,
    test_idx: Sequence[np.ndarray],
) -> list[float]:
    """Return each device's accuracy of its own model on its own test rows, batched.

    ``states`` holds every device's model stacked along a new first dimension (row ``i`` is
    the model of ``test_idx[i]``'s device), as personalised algorithms keep them. The forward
    passes run as one ``torch.func.vmap`` over the devices, each device's rows padded to the
    longest (padding rows are evaluated and ignored). Equal to evaluating each device alone
    up to float reordering inside the batched matrix products (a prediction can differ only
    where two logits tie to rounding); models must not use batch statistics in eval mode
    (BatchNorm uses its running statistics, as usual).

    Parameters
    ----------
    model : torch.nn.Module
        A model of the right architecture (its weights are not used; it is put in eval mode).
    states : dict of str to torch.Tensor
        Stacked ``state_dict`` tensors, shape ``(len(test_idx), *shape)``.
    x, y : torch.Tensor
        The test samples and labels.
    test_idx : sequence of numpy.ndarray
        Each device's test rows.

    Returns
    -------
    list of float
        Accuracy per device, in the order of ``test_idx``.
    """
    devices = len(test_idx)
    longest = max((len(idx) for idx in test_idx), default=0)
    if devices == 0 or longest == 0:
        return [0.0] * devices
    rows = np.zeros((devices, longest), dtype=np.int64)
    valid = np.zeros((devices, longest), dtype=bool)
    for i, idx in enumerate(test_idx):
        rows[i, : len(idx)] = idx
        valid[i, : len(idx)] = True
    rows_t = torch.from_numpy(rows)
    scratch = model.eval()

    def forward(state: State, xb: Tensor) -> Tensor:
        return functional_call(scratch, state, (xb,))

    with torch.no_grad():
        logits = vmap(forward)(model_part(states), x[rows_t])
        hits = (logits.argmax(dim=2) == y[rows_t]).numpy() & valid
    return [float(hits[i].sum()) / max(1, len(idx)) for i, idx in enumerate(test_idx)]
