"""Seeded, integer-keyed random streams (DESIGN.md section 5)."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Purpose(IntEnum):
    """What a random stream is for; the integer is part of the stream key."""

    PARTITION = 1
    SELECT = 2
    DOWNLOAD = 3
    UPLOAD = 4
    COMPUTE = 5
    AVAILABILITY = 6
    TRAIN = 7
    MODEL_INIT = 8
    DATA = 9
    BACKHAUL = 10
    DEVICE_ROUND = 11
    LINK_QUALITY = 12
    OFFLOAD = 13
    NOISE = 14
    PERSONALISE = 15
    SYNTHETIC_HAR = 16
    BASELINE = 17
    SHARING = 18


def stream(seed: int, purpose: Purpose, *key: int) -> np.random.Generator:
    """Return the generator for ``(seed, purpose, *key)``.

    Streams are keyed, never consumed from a shared generator, so the draw for a
    given device and round does not depend on what else was drawn before it.

    Parameters
    ----------
    seed : int
        The scenario seed.
    purpose : Purpose
        What the draws are for.
    *key : int
        Further integer keys (device id, round, ...), all non-negative.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(purpose), *key)))


def int_seed(seed: int, purpose: Purpose, *key: int) -> int:
    """Return a 63-bit integer seed for ``(seed, purpose, *key)`` (for torch generators)."""
    seq = np.random.SeedSequence(seed, spawn_key=(int(purpose), *key))
    low, high = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    return (high << 32 | low) & (2**63 - 1)
