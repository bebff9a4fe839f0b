"""The centrally trained neural baseline (PerFit's c3NN, cCNN): the scenario's model, plain SGD."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.baselines.centralised import BaselineOptions, PooledData, Progress, method_seed
from fedsim.errors import InputError
from fedsim.models import build_model
from fedsim.prepare import Prepared
from fedsim.runtime.evaluation import EVAL_BLOCK_ROWS
from fedsim.runtime.optim import LocalSGD, model_part
from fedsim.runtime.training import DeviceJob, train_loop
from fedsim.runtime.transport import shared_tensor
from fedsim.seeding import Purpose, int_seed

#: PerFit's SGD step size (section V-A), for algorithms whose devices do not run plain SGD.
PERFIT_LR = 0.01
#: Batch size when the algorithm names none.
DEFAULT_BATCH_SIZE = 20


def nn_optimizer(prep: Prepared, opts: BaselineOptions) -> LocalSGD:
    """Return the SGD settings: the options', else the scenario's device SGD's, else PerFit's.

    ``lr`` and ``batch_size`` left None in ``opts`` come from the algorithm's device
    optimiser when it is plain SGD (FedAvg, FedAdam); otherwise ``lr`` is PerFit's 0.01 and
    ``batch_size`` the algorithm's ``batch_size`` param (20 without one). One epoch per call.
    """
    device_opt = getattr(prep.algorithm, "optimizer", None)
    sgd = device_opt if type(device_opt) is LocalSGD else None
    lr = opts.lr or (sgd.lr if sgd is not None else PERFIT_LR)
    batch = opts.batch_size or (
        sgd.batch_size
        if sgd is not None
        else int(getattr(prep.algorithm.params, "batch_size", DEFAULT_BATCH_SIZE))
    )
    return LocalSGD(lr=lr, local_epochs=1, batch_size=batch)


def train_predict_nn(
    prep: Prepared, data: PooledData, rows: np.ndarray, opts: BaselineOptions, say: Progress
) -> np.ndarray:
    """Train the scenario's model on the pooled rows; return its predictions on ``x_test[rows]``.

    The model starts from the simulation's initial global model (seeded by the scenario seed,
    ``Purpose.MODEL_INIT``) and runs ``opts.epochs`` epochs of the simulator's own SGD
    (:func:`fedsim.runtime.training.train_loop`: cross-entropy averaged over each batch,
    ``p -= lr * grad``); epoch ``e`` visits the rows in the order of a permutation seeded by
    ``(seed, BASELINE, nn, e)``. It runs on the CPU with ``runtime.torch_threads`` threads
    (the caller's setting is restored afterwards).

    Raises
    ------
    InputError
        For a batch of 1 with a BatchNorm model.
    """
    sc = prep.scenario
    ds = data.dataset
    opt = nn_optimizer(prep, opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(sc.runtime.torch_threads)
    try:
        with torch.random.fork_rng(devices=[]):  # as the simulation's initial global model
            torch.manual_seed(int_seed(sc.seed, Purpose.MODEL_INIT))
            model = build_model(sc.model, ds.input_shape, ds.num_classes)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        x, y = shared_tensor(ds.x_train), shared_tensor(ds.y_train)
        say(f"nn: model {sc.model}, lr {opt.lr:g}, batch {opt.batch_size}, {opts.epochs} epochs")
        for epoch in range(opts.epochs):
            job = DeviceJob(0, data.train_idx, method_seed(sc.seed, "nn", epoch))
            try:
                (result,) = train_loop(model, state, x, y, [job], opt)
            except ValueError as exc:  # batch 1 with BatchNorm
                raise InputError(f"--batch-size: {exc}") from None
            state = result.state
            say(f"nn: epoch {epoch + 1}/{opts.epochs}, mean loss {result.mean_loss:.4f}")
        return _predict(model, state, shared_tensor(ds.x_test), rows)
    finally:
        torch.set_num_threads(threads)


def _predict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, rows: np.ndarray
) -> np.ndarray:
    """Return the predicted class of each row ``x[rows]``, in fixed blocks, in eval mode."""
    model.load_state_dict(model_part(state))
    model.eval()
    out = [np.zeros(0, dtype=np.int64)]
    with torch.no_grad():
        for lo in range(0, len(rows), EVAL_BLOCK_ROWS):
            block = torch.from_numpy(rows[lo : lo + EVAL_BLOCK_ROWS])
            out.append(model(x[block]).argmax(dim=1).numpy())
    return np.concatenate(out)
