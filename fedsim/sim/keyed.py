"""Many keyed streams at once: the generators of :func:`fedsim.seeding.stream`, seeded in bulk.

``stream(seed, purpose, *head, i, *tail)`` builds a ``SeedSequence`` and a ``PCG64`` for one
key, ~15 µs each; a round needs one per selected device. :class:`KeyedStreams` computes the
same ``PCG64`` states for a whole array of ids ``i`` with numpy (numpy's documented
``SeedSequence`` hash and PCG64 seeding), then serves each stream by loading its state into
one reused generator (~3 µs). The draws are those of ``stream`` bit for bit; a self-check
against ``stream`` at construction falls back to ``stream`` itself should numpy ever seed
differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsim.seeding import Purpose, stream

_M32 = 0xFFFFFFFF
_M128 = (1 << 128) - 1
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_POOL = 4
_PCG_MULT = (2549297995355413924 << 64) | 4865540595714422341


def _words(value: int) -> list[int]:
    """Return an integer as little-endian 32-bit words (numpy's entropy coercion)."""
    if value == 0:
        return [0]
    out = []
    while value:
        out.append(value & _M32)
        value >>= 32
    return out


class _Hash:
    """numpy's ``SeedSequence`` mixing on uint32 values or arrays, with its running constant."""

    def __init__(self) -> None:
        self.const = _INIT_A

    def hashmix(self, value: int | np.ndarray) -> int | np.ndarray:
        value = value ^ self.const
        self.const = (self.const * _MULT_A) & _M32
        if isinstance(value, np.ndarray):
            value = value * np.uint32(self.const)
            return value ^ (value >> np.uint32(16))
        value = (value * self.const) & _M32
        return value ^ (value >> 16)


def _mix(x: int | np.ndarray, y: int | np.ndarray) -> int | np.ndarray:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        xs, ys = np.asarray(x, dtype=np.uint32), np.asarray(y, dtype=np.uint32)
        mixed = xs * np.uint32(_MIX_L) - ys * np.uint32(_MIX_R)
        return mixed ^ (mixed >> np.uint32(16))
    result = (_MIX_L * x - _MIX_R * y) & _M32
    return result ^ (result >> 16)


def pcg64_states(
    seed: int, key_head: Sequence[int], ids: np.ndarray, key_tail: Sequence[int]
) -> list[tuple[int, int]]:
    """Return the ``(state, inc)`` of ``PCG64(SeedSequence(seed, spawn_key=key))`` per id.

    The key of id ``i`` is ``(*key_head, i, *key_tail)``; every ``i`` must be below 2**32.
    """
    ids = np.asarray(ids, dtype=np.int64)
    run = _words(seed)
    run += [0] * (_POOL - len(run))  # numpy pads the seed when there is a spawn key
    h = _Hash()
    pool: list[int | np.ndarray] = [h.hashmix(w) for w in run[:_POOL]]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], h.hashmix(pool[src]))
    head: list[int | np.ndarray] = [*run[_POOL:], *(w for k in key_head for w in _words(int(k)))]
    tail = [w for k in key_tail for w in _words(int(k))]
    for word in [*head, ids.astype(np.uint32), *tail]:
        for dst in range(_POOL):
            pool[dst] = _mix(pool[dst], h.hashmix(word))
    # generate_state(4, uint64): 8 uint32 words, read as little-endian pairs
    const = _INIT_B
    words = []
    for i in range(8):
        value = np.asarray(pool[i % _POOL], dtype=np.uint32) ^ np.uint32(const)
        const = (const * _MULT_B) & _M32
        value = value * np.uint32(const)
        words.append((value ^ (value >> np.uint32(16))).astype(np.uint64))
    u64 = [
        np.broadcast_to(words[2 * k] | (words[2 * k + 1] << np.uint64(32)), ids.shape)
        for k in range(4)
    ]
    out = []
    for s_hi, s_lo, i_hi, i_lo in zip(*(u.tolist() for u in u64), strict=True):
        init_state, init_seq = s_hi << 64 | s_lo, i_hi << 64 | i_lo
        inc = ((init_seq << 1) | 1) & _M128
        state = (inc + init_state) & _M128  # 0 * mult + inc, then + initstate
        out.append(((state * _PCG_MULT + inc) & _M128, inc))
    return out


class KeyedStreams:
    """The streams ``stream(seed, purpose, *key_head, i, *key_tail)`` for an array of ids.

    Parameters
    ----------
    seed : int
        The scenario seed.
    purpose : Purpose
        What the draws are for.
    key_head, key_tail : sequence of int
        The keys before and after the id.
    """

    def __init__(
        self,
        seed: int,
        purpose: Purpose,
        key_head: Sequence[int] = (),
        key_tail: Sequence[int] = (),
    ) -> None:
        self._seed = seed
        self._head = (int(purpose), *(int(k) for k in key_head))
        self._tail = tuple(int(k) for k in key_tail)
        self._bitgen = np.random.PCG64(0)
        self._rng = np.random.Generator(self._bitgen)
        probe = np.array([7], dtype=np.int64)
        expected = stream(seed, purpose, *self._head[1:], 7, *self._tail).bit_generator.state
        st = pcg64_states(seed, self._head, probe, self._tail)[0]
        self.exact = expected["state"] == {"state": st[0], "inc": st[1]}

    def states(self, ids: np.ndarray) -> list[tuple[int, int]] | None:
        """Return the seeded states for ``ids`` (None: use :meth:`generator` without one)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.exact or (ids.size and (ids.min() < 0 or ids.max() >= 2**32)):
            return None
        return pcg64_states(self._seed, self._head, ids, self._tail)

    def generator(self, device_id: int, state: tuple[int, int] | None) -> np.random.Generator:
        """Return the stream of ``device_id``: the reused generator loaded with ``state``.

        The generator is shared: finish drawing from it before asking for the next one.
        """
        if state is None:
            return stream(
                self._seed, Purpose(self._head[0]), *self._head[1:], device_id, *self._tail
            )
        self._bitgen.state = {
            "bit_generator": "PCG64",
            "state": {"state": state[0], "inc": state[1]},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self._rng
