"""Built-in models, each an ``nn.Sequential`` of standard layers, built from a name and shapes."""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from torch import nn

from fedsim.errors import InputError

MODEL_NAMES: tuple[str, ...] = (
    "mtfl_2nn",
    "fedavg_2nn",
    "mtfl_cnn",
    "perfit_3nn",
    "perfit_cnn",
    "digits_mlp",
    "logreg",
)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a model by name for inputs of ``input_shape`` and ``num_classes`` outputs.

    The structure is a deterministic function of the arguments; the parameter values
    come from torch's default initialisation, so the caller seeds it
    (``torch.manual_seed`` or by loading a state dict).

    Models
    ------
    ``mtfl_2nn``
        MTFL's MNIST 2NN: Linear(784, 200), ReLU, BatchNorm1d(200), Linear(200, 200),
        ReLU, Linear(200, 10). Input ``(784,)``, 10 classes (199,610 parameters).
    ``fedavg_2nn``
        McMahan et al.'s MNIST 2NN without BatchNorm: Linear(784, 200), ReLU,
        Linear(200, 200), ReLU, Linear(200, 10) (199,210 parameters).
    ``mtfl_cnn``
        MTFL's CIFAR-10 CNN: Conv(3, 32, 3), ReLU, MaxPool 2, BatchNorm2d(32),
        Conv(32, 64, 3), ReLU, MaxPool 2, BatchNorm2d(64), Flatten (2304),
        Linear(2304, 512), ReLU, Linear(512, 10). Input ``(3, 32, 32)``, 10 classes.
    ``perfit_3nn``
        PerFit's 3NN: Linear(F, 400), ReLU, Linear(400, 100), ReLU,
        Linear(100, classes) for any input (flattened first if not flat). Parameters
        ``400 F + 40,100 + 101 * classes``; PerFit's 521,510 is ``F = 1200`` with 10
        classes (e.g. 6 inertial channels x 200 samples); the 561 UCI-HAR features with
        6 classes give 265,506.
    ``perfit_cnn``
        PerFit's CNN: three 3x3 convolutions with 32, 16 and 8 channels (padding 1,
        each followed by ReLU), a 2x2 max-pool after the first two, Flatten,
        Linear(., 128), ReLU, Linear(128, classes). Input ``(C, H, W)`` uses 2-D
        convolutions; ``(C, L)`` (a C-channel signal) and ``(F,)`` (read as a
        1-channel signal of length F) use 1-D convolutions of width 3. PerFit's 33,698
        parameters are reproduced exactly by ``(3, H, W)`` with ``H, W`` in 20..23
        (8 x 5 x 5 = 200 features into the 128-unit layer) and 10 classes.
    ``digits_mlp``
        Linear(F, 32), ReLU, Linear(32, classes) (sklearn digits: F = 64).
    ``logreg``
        Linear(F, classes): multinomial logistic regression.

    Raises
    ------
    InputError
        For an unknown name, or an input shape or class count the model cannot take,
        naming the model, what it expects and what it got.
    """
    builders: dict[str, Callable[[tuple[int, ...], int], nn.Sequential]] = {
        "mtfl_2nn": _mtfl_2nn,
        "fedavg_2nn": _fedavg_2nn,
        "mtfl_cnn": _mtfl_cnn,
        "perfit_3nn": _perfit_3nn,
        "perfit_cnn": _perfit_cnn,
        "digits_mlp": _digits_mlp,
        "logreg": _logreg,
    }
    if name not in builders:
        raise InputError(f"model: unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    shape = tuple(input_shape)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise InputError(f"model {name!r}: input shape must be positive integers, got {shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"model {name!r}: needs at least 2 classes, got {num_classes!r}")
    return builders[name](shape, num_classes)


def _expect(
    name: str,
    shape: tuple[int, ...],
    num_classes: int,
    want_shape: tuple[int, ...],
    want_classes: int,
) -> None:
    """Raise InputError if a fixed-shape model gets other data."""
    problems = []
    if shape != want_shape:
        problems.append(f"model {name!r} expects input shape {want_shape}, the dataset has {shape}")
    if num_classes != want_classes:
        problems.append(
            f"model {name!r} expects {want_classes} classes, the dataset has {num_classes}"
        )
    if problems:
        raise InputError(problems)


def _flat(shape: tuple[int, ...]) -> tuple[list[nn.Module], int]:
    """Return the layers that flatten an input of ``shape`` and the flat size."""
    return ([nn.Flatten()] if len(shape) > 1 else []), prod(shape)


def _mtfl_2nn(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    _expect("mtfl_2nn", shape, num_classes, (784,), 10)
    return nn.Sequential(
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.BatchNorm1d(200),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def _fedavg_2nn(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    _expect("fedavg_2nn", shape, num_classes, (784,), 10)
    return nn.Sequential(
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def _mtfl_cnn(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    _expect("mtfl_cnn", shape, num_classes, (3, 32, 32), 10)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(32),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(64),
        nn.Flatten(),
        nn.Linear(2304, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def _perfit_3nn(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    head, size = _flat(shape)
    return nn.Sequential(
        *head,
        nn.Linear(size, 400),
        nn.ReLU(),
        nn.Linear(400, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def _perfit_cnn(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    if len(shape) > 3:
        raise InputError(
            f"model 'perfit_cnn' expects an input shape (C, H, W), (C, L) or (F,), got {shape}"
        )
    head: list[nn.Module] = []
    if len(shape) == 1:
        head.append(nn.Unflatten(1, (1, shape[0])))
        shape = (1, shape[0])
    if len(shape) == 3:
        conv, pool = nn.Conv2d, nn.MaxPool2d
    else:
        conv, pool = nn.Conv1d, nn.MaxPool1d  # type: ignore[assignment]
    spatial = [s // 4 for s in shape[1:]]
    if min(spatial) < 1:
        raise InputError(
            f"model 'perfit_cnn' needs every spatial size >= 4 (two 2x2 pools), got {shape}"
        )
    return nn.Sequential(
        *head,
        conv(shape[0], 32, 3, padding=1),
        nn.ReLU(),
        pool(2),
        conv(32, 16, 3, padding=1),
        nn.ReLU(),
        pool(2),
        conv(16, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * prod(spatial), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def _digits_mlp(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    head, size = _flat(shape)
    return nn.Sequential(*head, nn.Linear(size, 32), nn.ReLU(), nn.Linear(32, num_classes))


def _logreg(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    head, size = _flat(shape)
    return nn.Sequential(*head, nn.Linear(size, num_classes))
