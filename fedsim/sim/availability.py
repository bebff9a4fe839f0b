"""Device availability: always on, a per-device alternating on/off process, or a trace."""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from fedsim.config import AvailabilitySpec
from fedsim.seeding import Purpose
from fedsim.sim.keyed import KeyedStreams
from fedsim.sim.traces import AvailabilityTrace

_BLOCK = 32  # switch times are drawn 32 at a time (even: a block starts in the first state)
_MASK64 = (1 << 64) - 1


class _Block(NamedTuple):
    """One block of a device's switch times: ``switches[i]`` ends period ``32 * number + i``."""

    number: int
    start_s: float
    online_first: bool
    switches: list[float]


def _online(block: _Block, t: float) -> bool:
    """Return the state at ``t`` of the block holding ``t``."""
    k = bisect.bisect_right(block.switches, t)  # switches of this block at or before t
    return block.online_first == (k % 2 == 0)


class Availability:
    """When each device is on line.

    With ``kind: on_off`` each device alternates exponential on and off periods with the
    given means, starting in the stationary state; its whole timeline is a function of the
    seed and the device id alone (its own keyed stream, drawn 32 periods at a time), so it
    never depends on what other devices did or on the order of queries.

    Memory is bounded at any population. The switch times of the ``cache_size`` most
    recently asked devices are kept (one block of 32 each). A device whose timeline has
    run past its first block also keeps a cursor in flat numpy arrays: the block reached,
    where it starts, and the stream's state there (45 bytes; pages of the arrays that no
    such device uses are never touched). Everything else is recomputed from the keyed
    stream when asked (replaying from the start, e.g. for a time before the cursor),
    which gives the same times: answers never depend on what happens to be cached.

    With a ``trace``, the devices it covers follow it instead (on line exactly during
    their intervals; see docs/traces.md) and the others follow the drawn model, their
    answers unchanged. The trace holds its rows, not a table per device, and covered
    devices never touch the cursors or the cache.

    Parameters
    ----------
    spec : AvailabilitySpec
        The scenario's availability block.
    seed : int
        The scenario seed.
    num_devices : int, optional
        Population size, to size the cursor arrays up front (they grow on demand).
    cache_size : int
        How many devices' current blocks of switch times to keep.
    trace : AvailabilityTrace, optional
        On-line intervals that replace the drawn model for the devices they cover.
    """

    def __init__(
        self,
        spec: AvailabilitySpec,
        seed: int,
        num_devices: int | None = None,
        cache_size: int = 4096,
        *,
        trace: AvailabilityTrace | None = None,
    ) -> None:
        self._spec = spec
        self._trace = trace
        self._drawn_always_on = spec.kind == "always_on"
        self._p_on = spec.mean_on_s / (spec.mean_on_s + spec.mean_off_s)
        # period k of a block lasts exp(1) * means[k]; even k are in the block's first state
        even = np.arange(_BLOCK) % 2 == 0
        self._means = {
            True: np.where(even, spec.mean_on_s, spec.mean_off_s),
            False: np.where(even, spec.mean_off_s, spec.mean_on_s),
        }
        self._cache: OrderedDict[int, _Block] = OrderedDict()
        self._cache_size = max(1, cache_size)
        drawn_on = self._drawn_always_on
        self._streams = None if drawn_on else KeyedStreams(seed, Purpose.AVAILABILITY)
        size = 0 if num_devices is None or drawn_on else num_devices
        self._block_index = np.zeros(size, dtype=np.int32)  # 0: no cursor past block 0
        self._block_start_s = np.zeros(size, dtype=np.float64)
        self._online_first = np.zeros(size, dtype=np.bool_)
        self._rng_state = np.zeros((size, 4), dtype=np.uint64)  # PCG64 state, inc: hi, lo

    @property
    def always_on(self) -> bool:
        """Return True when every device is always on line (never with a trace)."""
        return self._drawn_always_on and self._trace is None

    @property
    def trace(self) -> AvailabilityTrace | None:
        """Return the availability trace, if any."""
        return self._trace

    @property
    def p_on(self) -> float:
        """Return the drawn model's stationary probability that a device is on line.

        With a trace this is still the drawn model's figure (1 with ``always_on``): it
        only sizes how many devices selection asks about at a time.
        """
        return 1.0 if self._drawn_always_on else self._p_on

    def _grow(self, device_id: int) -> None:
        old = self._block_index.shape[0]
        extra = max(device_id + 1, 2 * old, 1024) - old
        self._block_index = np.concatenate([self._block_index, np.zeros(extra, np.int32)])
        self._block_start_s = np.concatenate([self._block_start_s, np.zeros(extra)])
        self._online_first = np.concatenate([self._online_first, np.zeros(extra, np.bool_)])
        self._rng_state = np.concatenate([self._rng_state, np.zeros((extra, 4), np.uint64)])

    def _cached(self, device_id: int, t: float) -> _Block | None:
        block = self._cache.get(device_id)
        if block is not None and block.start_s <= t < block.switches[-1]:
            self._cache.move_to_end(device_id)
            return block
        return None

    def _has_cursor(self, device_id: int, t: float) -> bool:
        return device_id < self._block_index.shape[0] and (
            self._block_index[device_id] > 0 and self._block_start_s[device_id] <= t
        )

    def _from_cursor(self, device_id: int) -> np.random.Generator:
        assert self._streams is not None
        s_hi, s_lo, i_hi, i_lo = self._rng_state[device_id].tolist()
        # random() and exponential() draw whole 64-bit words: no buffered half-word to keep
        return self._streams.generator(device_id, (s_hi << 64 | s_lo, i_hi << 64 | i_lo))

    def _block_at(self, device_id: int, t: float, seeded: tuple[int, int] | None = None) -> _Block:
        """Return the block of switch times whose last switch is the first one after ``t``.

        ``seeded`` is the state of the device's stream from :class:`KeyedStreams`, if known.
        """
        block = self._cached(device_id, t)
        if block is not None:
            return block
        assert self._streams is not None
        if self._has_cursor(device_id, t):
            rng = self._from_cursor(device_id)
            index = int(self._block_index[device_id])
            start = float(self._block_start_s[device_id])
            online_first = bool(self._online_first[device_id])
        else:  # replay the timeline from its beginning
            rng = self._streams.generator(device_id, seeded)
            index, start = 0, 0.0
            online_first = bool(rng.random() < self._p_on)
        state = None
        while True:
            if index > 0:
                state = rng.bit_generator.state["state"]
            durations = rng.exponential(1.0, _BLOCK) * self._means[online_first]
            switches = (start + np.cumsum(durations)).tolist()
            if switches[-1] > t:
                break
            index, start = index + 1, switches[-1]
        if state is not None:  # keep a cursor: the next query need not replay up to here
            if device_id >= self._block_index.shape[0]:
                self._grow(device_id)
            s, inc = state["state"], state["inc"]
            self._rng_state[device_id] = (s >> 64, s & _MASK64, inc >> 64, inc & _MASK64)
            self._block_index[device_id] = index
            self._block_start_s[device_id] = start
            self._online_first[device_id] = online_first
        block = _Block(index, start, online_first, switches)
        self._cache[device_id] = block
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return block

    def online_at(self, device_id: int, t: float) -> bool:
        """Return whether the device is on line at virtual time ``t``."""
        if self._trace is not None and self._trace.covers(device_id):
            return self._trace.online_at(device_id, t)
        if self._drawn_always_on:
            return True
        return _online(self._block_at(device_id, t), t)

    def online_mask(self, device_ids: np.ndarray, t: float) -> np.ndarray:
        """Return whether each device is on line at ``t`` (seeding replays in bulk)."""
        if self._trace is None:
            return self._drawn_mask(device_ids, t)
        ids = np.asarray(device_ids, dtype=np.int64)
        covered = self._trace.covers_mask(ids)
        out = np.empty(ids.shape[0], dtype=bool)
        trace = self._trace
        out[covered] = [trace.online_at(d, t) for d in ids[covered].tolist()]
        out[~covered] = self._drawn_mask(ids[~covered], t)
        return out

    def _drawn_mask(self, device_ids: np.ndarray, t: float) -> np.ndarray:
        """Return the drawn model's answer for each device."""
        ids = np.asarray(device_ids, dtype=np.int64).tolist()
        if self._drawn_always_on:
            return np.ones(len(ids), dtype=bool)
        assert self._streams is not None
        replay = [d for d in ids if self._cached(d, t) is None and not self._has_cursor(d, t)]
        states = self._streams.states(np.array(replay, dtype=np.int64)) if replay else None
        seeded = dict(zip(replay, states, strict=True)) if states is not None else {}
        out = np.empty(len(ids), dtype=bool)
        for i, d in enumerate(ids):
            out[i] = _online(self._block_at(d, t, seeded.get(d)), t)
        return out

    def offline_after(self, device_id: int, t: float) -> float:
        """Return the first time after ``t`` at which an on-line device goes off line.

        A device the trace covers goes off line at the end of its interval holding ``t``
        (``t`` itself if it is off line then).
        """
        if self._trace is not None and self._trace.covers(device_id):
            return self._trace.offline_after(device_id, t)
        if self._drawn_always_on:
            return math.inf
        block = self._block_at(device_id, t)
        return float(block.switches[bisect.bisect_right(block.switches, t)])
