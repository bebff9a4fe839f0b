"""``synthetic_har``: generated human-activity data of users who differ, shaped like UCI HAR.

Each activity is a class-conditional template. In the ``inertial`` view (9 channels x 128
samples at 50 Hz, UCI HAR's channel order) the first half of the activities are periodic
(walking-like: a step frequency of 1.5-2.1 Hz and its second harmonic on every body
channel, the phone upright), the rest static (a slow sway of small amplitude, the phone
held at the activity's own angle); total acceleration is body acceleration plus gravity,
and every channel has sensor noise. In the ``engineered`` view (561 features in (-1, 1))
an activity is a mean in an 8-dimensional latent space, projected to 561 features and
squashed by ``tanh``.

Users differ in three ways. Two are scaled by ``user_shift`` (0 turns them off): a
user-specific transform (``inertial``: how the phone sits, a rotation of typically 20 and
at most 50 degrees, and sensor offsets; ``engineered``: a linear map and an offset of the
latent space) and the user's own way of doing each activity (``inertial``: its pace,
vigour per channel and posture; ``engineered``: a shift of each activity's mean). The
third is a skewed activity mix: the user's training windows follow proportions drawn from
Dir(``alpha``) over activities. The test windows are class-balanced (``test_mix:
balanced``, PerFit's setup) or follow the user's mix (``test_mix: user``). So a model
per user can beat one global model: with the defaults (12 users, seed 1), a logistic
regression on all users' windows scored 0.87 on the users' balanced tests, one per user
that weights the user's own windows 30-fold 0.90 (``engineered``); on the windows'
per-channel means, standard deviations and spectra 0.91 and 0.96 (``inertial``).

Everything is a function of the scenario seed (``Purpose.SYNTHETIC_HAR``); a user's windows
are keyed by its index, so they do not depend on how many users there are (except, in the
``inertial`` view, through the standardisation with all users' training windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsim.data.datasets import Dataset
from fedsim.data.har import choice_problems, input_shape, standardise
from fedsim.errors import InputError
from fedsim.seeding import Purpose, stream

#: Option types (checked by ``fedsim.data.datasets``) and defaults.
OPTION_TYPES: dict[str, type] = {
    "num_users": int, "num_activities": int, "samples_per_user": int, "test_fraction": float,
    "alpha": float, "user_shift": float, "features": str, "test_mix": str,
}  # fmt: skip
DEFAULTS: dict[str, Any] = {
    "num_users": 30, "num_activities": 6, "samples_per_user": 640, "test_fraction": 0.25,
    "alpha": 1.0, "user_shift": 1.0, "features": "engineered", "test_mix": "balanced",
}  # fmt: skip
RANGES: dict[str, tuple[float, float]] = {
    "num_users": (1, 10**4), "num_activities": (2, 100), "samples_per_user": (2, 10**6),
    "alpha": (1e-3, 1e6), "user_shift": (0.0, 10.0),
}  # fmt: skip
MAX_VALUES = 10**8  # generated input values (400 MB of float32)
SAMPLE_HZ = 50.0
LATENT_DIM = 8
#: Inertial view: the spread of a user's pace and vigour (log scale) and posture per
#: activity, and the sensor noise (in g, or rad/s).
STYLE_PACE, STYLE_VIGOUR, STYLE_POSTURE, NOISE_G = 0.12, 0.5, 0.4, 0.1
#: Engineered view: within-activity spread; the scale of a user's latent map, its offset
#: and its own way of doing each activity (a shift of each activity's mean).
LATENT_NOISE, USER_MAP, USER_OFFSET, USER_STYLE = 0.7, 0.3, 0.7, 0.6
#: Stream parts (the first key after the purpose).
_TEMPLATES, _MIX, _TRANSFORM, _WINDOWS = 0, 1, 2, 3


def option_problems(opts: Mapping[str, Any]) -> list[str]:
    """Return one line per option value out of its range."""
    problems = [
        f"data.options.{key}: expected a number in [{lo:g}, {hi:g}], got {opts[key]!r}"
        for key, (lo, hi) in RANGES.items()
        if not lo <= opts[key] <= hi
    ]
    choices = {"features": ("engineered", "inertial"), "test_mix": ("balanced", "user")}
    problems += choice_problems(opts, choices)
    if problems:
        return problems
    values = (
        opts["num_users"] * opts["samples_per_user"] * int(np.prod(input_shape(opts["features"])))
    )
    if values > MAX_VALUES:
        problems.append(
            f"data.options: num_users x samples_per_user x values per sample = {values:,}; at "
            f"most {MAX_VALUES:,} (the generated inputs must fit in memory)"
        )
    return problems


def _rounded(weights: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Return counts summing to ``total`` in proportion to ``weights`` (ties broken at random)."""
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.lexsort((rng.random(len(quota)), -(quota - counts)))
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def user_labels(
    seed: int, user: int, opts: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return a user's activity mix and its train and test labels (shuffled).

    Returns
    -------
    mix : np.ndarray
        float64 proportions over activities, ~ Dir(``alpha``).
    y_train, y_test : np.ndarray
        int64 labels; ``y_train`` follows ``mix``, ``y_test`` is balanced or follows it.
    """
    rng = stream(seed, Purpose.SYNTHETIC_HAR, _MIX, user)
    k, n = int(opts["num_activities"]), int(opts["samples_per_user"])
    mix = rng.dirichlet(np.full(k, float(opts["alpha"])))
    n_test = int(np.clip(round(n * float(opts["test_fraction"])), 1, n - 1))
    test_weights = np.ones(k) if opts["test_mix"] == "balanced" else mix
    labels = []
    for count, weights in ((n - n_test, mix), (n_test, test_weights)):
        y = np.repeat(np.arange(k, dtype=np.int64), _rounded(weights, count, rng))
        labels.append(rng.permutation(y))
    return mix, labels[0], labels[1]


def _inertial_templates(seed: int, k: int) -> dict[str, np.ndarray]:
    """Return each activity's frequency, gravity direction, amplitudes and phases."""
    rng = stream(seed, Purpose.SYNTHETIC_HAR, _TEMPLATES, 0)
    dynamic = np.arange(k) < (k + 1) // 2
    step_hz = np.where(dynamic, rng.uniform(1.5, 2.1, k), rng.uniform(0.2, 0.5, k))
    upright = np.array([1.0, 0.0, 0.0])
    tilt = np.where(dynamic[:, None], 0.15, 0.9) * rng.standard_normal((k, 3))
    gravity = upright + tilt
    gravity /= np.linalg.norm(gravity, axis=1, keepdims=True)
    scale = np.where(dynamic, 1.0, 0.05)[:, None]
    amp = scale * np.concatenate([rng.uniform(0.1, 0.4, (k, 3)), rng.uniform(0.2, 0.8, (k, 3))], 1)
    return {
        "step_hz": step_hz, "gravity": gravity, "amp": amp,
        "harmonic": rng.uniform(0.0, 0.6, (k, 6)), "phase": rng.uniform(0, 2 * np.pi, (k, 2, 6)),
    }  # fmt: skip


def _rotation(rng: np.random.Generator, angle_rad: float) -> np.ndarray:
    """Return the rotation by ``angle_rad`` about a random axis (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1 - np.cos(angle_rad)) * cross @ cross


def _inertial(
    seed: int, user: int, y: np.ndarray, tpl: dict[str, np.ndarray], shift: float
) -> np.ndarray:
    """Return a user's windows ``(n, 9, 128)`` for activities ``y``."""
    k = len(tpl["step_hz"])
    t_rng = stream(seed, Purpose.SYNTHETIC_HAR, _TRANSFORM, user)
    rot = _rotation(t_rng, shift * np.deg2rad(25.0) * min(abs(t_rng.standard_normal()), 2.0))
    bias = shift * t_rng.normal(0.0, 0.05, 9)
    # the user's own way of doing each activity: its pace, vigour per channel and posture
    pace = np.exp(shift * t_rng.normal(0.0, STYLE_PACE, k))
    vigour = np.exp(shift * t_rng.normal(0.0, STYLE_VIGOUR, (k, 6)))
    posture = tpl["gravity"] + shift * t_rng.normal(0.0, STYLE_POSTURE, (k, 3))
    posture /= np.linalg.norm(posture, axis=1, keepdims=True)
    rng = stream(seed, Purpose.SYNTHETIC_HAR, _WINDOWS, user)
    n = len(y)
    t_s = np.arange(128) / SAMPLE_HZ
    hz = tpl["step_hz"][y] * pace[y] * np.exp(rng.normal(0.0, 0.05, n))
    start = rng.uniform(0, 2 * np.pi, n)
    angle = 2 * np.pi * hz[:, None, None] * t_s + start[:, None, None]  # (n, 1, 128)
    phase = tpl["phase"][y][..., None]  # (n, 2, 6, 1)
    wave = np.sin(angle + phase[:, 0]) + tpl["harmonic"][y][..., None] * np.sin(
        2 * angle + phase[:, 1]
    )
    body = (vigour[y] * tpl["amp"][y])[..., None] * wave  # (n, 6, 128): acc, gyro xyz
    acc = np.einsum("ij,njt->nit", rot, body[:, :3])
    gyro = np.einsum("ij,njt->nit", rot, body[:, 3:])
    total = acc + (posture[y] @ rot.T)[..., None]
    x = np.concatenate([acc, gyro, total], axis=1)
    x += rng.normal(0.0, NOISE_G, x.shape) + bias[None, :, None]
    return x


def _engineered(seed: int, user: int, y: np.ndarray, k: int, shift: float) -> np.ndarray:
    """Return a user's 561 features for activities ``y``."""
    rng = stream(seed, Purpose.SYNTHETIC_HAR, _TEMPLATES, 1)
    means = rng.standard_normal((k, LATENT_DIM))
    project = rng.normal(0.0, 0.6 / np.sqrt(LATENT_DIM), (561, LATENT_DIM))
    offset = rng.normal(0.0, 0.3, 561)
    t_rng = stream(seed, Purpose.SYNTHETIC_HAR, _TRANSFORM, user)
    mix = np.eye(LATENT_DIM) + shift * t_rng.normal(
        0.0, USER_MAP / np.sqrt(LATENT_DIM), (LATENT_DIM,) * 2
    )
    shift_vec = shift * t_rng.normal(0.0, USER_OFFSET, LATENT_DIM)
    style = shift * t_rng.normal(0.0, USER_STYLE, (k, LATENT_DIM))
    rng = stream(seed, Purpose.SYNTHETIC_HAR, _WINDOWS, user)
    z = means[y] + style[y] + rng.normal(0.0, LATENT_NOISE, (len(y), LATENT_DIM))
    return np.tanh(
        (z @ mix.T + shift_vec) @ project.T + offset + rng.normal(0.0, 0.1, (len(y), 561))
    )


def make_synthetic_har(seed: int, options: Mapping[str, Any]) -> Dataset:
    """Generate the ``synthetic_har`` dataset.

    Parameters
    ----------
    seed : int
        Scenario seed; the data is a function of it and the options.
    options : mapping
        Type-checked options (``OPTION_TYPES``): ``num_users`` (30), ``num_activities``
        (6), ``samples_per_user`` (640; ``round(samples_per_user * test_fraction)`` of
        them, at least one, for test), ``test_fraction`` (0.25), ``alpha`` (1.0, the
        Dirichlet concentration of the users' activity mixes), ``user_shift`` (1.0),
        ``features`` (``engineered`` | ``inertial``), ``test_mix`` (``balanced`` | ``user``).

    Returns
    -------
    Dataset
        float32 inputs ``(561,)`` or ``(9, 128)`` (inertial channels standardised with the
        training windows' statistics), int64 labels, users ``0..num_users-1``.

    Raises
    ------
    InputError
        For an option value out of range.
    """
    opts = {**DEFAULTS, **options}
    problems = option_problems(opts)
    if problems:
        raise InputError(problems)
    k, shift, view = int(opts["num_activities"]), float(opts["user_shift"]), opts["features"]
    templates = _inertial_templates(seed, k) if view == "inertial" else {}
    parts: dict[str, list[np.ndarray]] = {
        name: [] for name in ("xtr", "ytr", "utr", "xte", "yte", "ute")
    }
    for user in range(int(opts["num_users"])):
        _, y_train, y_test = user_labels(seed, user, opts)
        y = np.concatenate([y_train, y_test])
        if view == "inertial":
            x = _inertial(seed, user, y, templates, shift)
        else:
            x = _engineered(seed, user, y, k, shift)
        x = x.astype(np.float32)
        n_train = len(y_train)
        for key, value in (
            ("xtr", x[:n_train]),
            ("ytr", y_train),
            ("xte", x[n_train:]),
            ("yte", y_test),
        ):
            parts[key].append(value)
        parts["utr"].append(np.full(n_train, user, dtype=np.int64))
        parts["ute"].append(np.full(len(y_test), user, dtype=np.int64))
    xtr, xte = np.concatenate(parts["xtr"]), np.concatenate(parts["xte"])
    if view == "inertial":
        xtr, xte = standardise(xtr, xte)
    return Dataset(
        name="synthetic_har",
        x_train=xtr,
        y_train=np.concatenate(parts["ytr"]),
        x_test=xte,
        y_test=np.concatenate(parts["yte"]),
        num_classes=k,
        input_shape=input_shape(str(view)),
        users_train=np.concatenate(parts["utr"]),
        users_test=np.concatenate(parts["ute"]),
    )
