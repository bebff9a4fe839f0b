"""Shared test helpers (importable as `helpers`: pyproject puts tests/ on the path)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Return ``$FEDSIM_DATA`` or the ``shared/data`` folder beside the checkout."""
    env = os.environ.get("FEDSIM_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


class Crash(Exception):
    """Raised by :func:`crash_after` to cut a run short, as a crash would."""


def crash_after(round_index: int):  # type: ignore[no-untyped-def]
    """Return an ``on_round`` callback that raises :class:`Crash` after that round's row."""

    def on_round(row: dict) -> None:
        if row["round"] == round_index:
            raise Crash

    return on_round


def cut_and_resume(scenario, out: Path, round_index: int):  # type: ignore[no-untyped-def]
    """Run ``scenario`` into ``out`` until a crash after ``round_index``; resume it."""
    import pytest

    from fedsim.api import resume, run

    with pytest.raises(Crash):
        run(scenario, out, on_round=crash_after(round_index))
    return resume(out)


def same_files(a: Path, b: Path, names) -> None:  # type: ignore[no-untyped-def]
    """Assert that the files ``names`` of run folders ``a`` and ``b`` are byte-identical."""
    import filecmp

    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def sigint_default() -> None:
    """Give a child process the default SIGINT (``Popen(preexec_fn=...)``).

    A shell's background job (``pytest ... &``, as CI scripts run) ignores SIGINT, and an
    ignored signal is inherited through ``exec``: Python then installs no Ctrl-C handler,
    and a test that sends SIGINT would find its child unmoved.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: Whether a local Ray that :func:`run_on_ray` started is up (tests/conftest.py shuts it
#: down when the tests of its folder end).
RAY_KEPT = False


def run_on_ray(scenario, out: Path):  # type: ignore[no-untyped-def]
    """Run ``scenario`` (a Ray runtime) into ``out`` on a local Ray that stays up.

    The call starts Ray itself (as ``fedsim`` would, from the scenario's runtime) when it
    is not up, and leaves it for the next call of the folder's tests: starting Ray costs
    about 4 s. ``tests/conftest.py`` shuts it down when the folder's last test ends.
    """
    global RAY_KEPT
    import ray

    from fedsim.api import run
    from fedsim.runtime.ray_setup import start_ray

    if not ray.is_initialized():
        start_ray(scenario.runtime)
        RAY_KEPT = True
    return run(scenario, out)


def linear_device():  # type: ignore[no-untyped-def]
    """Return a float64 ``nn.Linear(3, 2)``, its state, 6 samples and the device's rows 1..4."""
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    return model, base, x, y, np.arange(1, 5, dtype=np.int64)


def linear_grad(w, b, x, y):  # type: ignore[no-untyped-def]
    """Return the batch gradient of the mean cross-entropy of logits x w^T + b (autograd)."""
    import torch
    import torch.nn.functional as F

    w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
    return torch.autograd.grad(F.cross_entropy(x @ w.T + b, y), (w, b))


def watch_uploads(monkeypatch) -> list[set[str]]:  # type: ignore[no-untyped-def]
    """Record the keys of every payload an edge reads and every model it sends up."""
    from fedsim.runtime.nodes import EdgeServer

    seen: list[set[str]] = []
    aggregate, upload = EdgeServer.aggregate, EdgeServer.upload

    def watch_aggregate(self, weights, payloads):  # type: ignore[no-untyped-def]
        def each():  # type: ignore[no-untyped-def]
            for p in payloads:
                seen.append(set(p))
                yield p

        return aggregate(self, weights, each())

    def watch_upload(self):  # type: ignore[no-untyped-def]
        out = upload(self)
        seen.append(set(out.state))
        return out

    monkeypatch.setattr(EdgeServer, "aggregate", watch_aggregate)
    monkeypatch.setattr(EdgeServer, "upload", watch_upload)
    return seen


def step_offset(a, b, base, key: str) -> float:  # type: ignore[no-untyped-def]
    """Return the largest difference of ``key`` between two runs' device results, relative
    to the first run's change of it from ``base``, over the devices."""
    return max(
        float((p.state[key] - q.state[key]).abs().max() / (p.state[key] - base[key]).abs().max())
        for p, q in zip(a, b, strict=True)
    )


def on_one_and_two_threads(loop, lock):  # type: ignore[no-untyped-def]
    """Return ``loop()`` and ``lock()`` on one torch thread, and ``loop()`` again on two.

    The per-step agreement tests compare lock-step with the loop against how far the loop
    moves from itself when MKL blocks its GEMMs for another number of threads.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, locked = loop(), lock()
        torch.set_num_threads(2)
        return one, locked, loop()
    finally:
        torch.set_num_threads(threads)
