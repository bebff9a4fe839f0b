"""A shared capacity on the SimPy clock: capped flows shared max-min fairly (processor sharing).

A :class:`SharedResource` is anything with a rate that concurrent users divide: an edge's
access network in one direction, a backhaul line, an edge's compute. A flow has an amount
of work (bits, FLOPs) and a cap (its own link's rate; ``inf`` for none). At every instant
the resource gives each flow ``min(cap, L)``, where the level ``L`` is the unique value
with ``sum(min(cap_i, L)) = capacity`` (or ``L = inf`` when the caps alone fit): max-min
fairness, the unused part of a capped flow's fair share going to the others. Rates change
exactly when a flow starts, finishes, stops or changes its cap.

Algorithm. Flows are in one of two sets. *Capped* flows (``cap < L``) run at their cap, so
each knows its absolute finish time and has its own timer. *Level* flows (``cap >= L``)
all run at ``L``; the resource keeps a virtual counter ``V`` that advances at ``L``
(``dV/dt = L``), and a level flow finishes when ``V`` reaches its key (the value of ``V``
at which its remaining work is done), so a start or finish changes no other level flow:
one heap of keys gives the next finish. A start or finish moves ``L``; flows cross
between the sets only when their cap is passed (a min-heap of level caps, a max-heap of
capped caps find them). Each event therefore costs O(log n) plus O(log n) per flow that
crosses — O(log n) when no cap binds, at worst O(n) when every cap is crossed — instead
of the O(n) of re-rating every flow. Heap entries are deleted lazily (each flow carries a
version). With an unlimited capacity no flow is ever shared and a flow costs one timer,
as an independent transfer does; a resource with one flow gives it ``min(cap, capacity)``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import simpy

_CAPPED, _LEVEL, _DONE, _STOPPED, _PENDING = 0, 1, 2, 3, 4
_REL_EPS = 1e-12  # remaining work below this share of a flow's work counts as done


@dataclass(eq=False)
class Flow:
    """One user of a shared resource.

    Attributes
    ----------
    owner : int
        Who it belongs to (a device or edge id); orders same-instant finishes.
    work : float
        Total work (bits, FLOPs).
    cap : float
        The flow's own maximum rate (work per second; ``inf`` for none).
    done : simpy.Event
        Succeeds when the work is complete.
    start_s : float
        When it started.
    end_s : float
        When it finished or was stopped (``nan`` while running).
    shared_s : float
        Seconds lost to sharing so far: the integral of ``1 - rate / min(cap, capacity)``.
    """

    owner: int
    work: float
    cap: float
    done: simpy.Event
    start_s: float
    end_s: float = math.nan
    shared_s: float = 0.0
    state: int = _CAPPED
    key: float = 0.0  # capped: absolute finish time; level: the V at which it finishes
    since_s: float = 0.0  # when it entered its current set
    since_v: float = 0.0  # V at that moment
    since_work: float = 0.0  # remaining work at that moment
    version: int = 0
    seq: int = field(default=0)
    alone: bool = False  # on an unlimited resource with a fixed cap: ``done`` is a timeout
    then: Callable[[Flow], None] | None = None  # called at the finish instead of ``done``

    @property
    def running(self) -> bool:
        """Return True until the flow finishes or is stopped."""
        return self.state in (_CAPPED, _LEVEL, _PENDING)


class SharedResource:
    """A capacity shared max-min fairly by capped flows, exactly on the SimPy clock.

    Parameters
    ----------
    env : simpy.Environment
        The clock.
    capacity : float
        Work per second the resource delivers in all (``inf``: unlimited, nothing shared).
    """

    def __init__(self, env: simpy.Environment, capacity: float = math.inf) -> None:
        if not capacity > 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.env = env
        self.capacity = capacity
        self._v = 0.0
        self._t = env.now
        self._n_level = 0
        self._capped_sum = 0.0
        self._n_capped = 0
        self._level_keys: list[tuple[float, int, int, int, Flow]] = []
        self._level_caps: list[tuple[float, int, int, int, Flow]] = []
        self._capped_caps: list[tuple[float, int, int, int, Flow]] = []
        self._seq = 0
        self._wake_at = math.inf
        self._settle_due = False  # starts of this instant wait for one settle
        self._last_begin_s = -math.inf
        self.max_flows = 0  # most flows at once (for reports)

    # -- public ---------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Return the number of running flows."""
        return self._n_level + self._n_capped

    def start(
        self,
        work: float,
        cap: float,
        owner: int,
        fixed_cap: bool = True,
        delay_s: float = 0.0,
        then: Callable[[Flow], None] | None = None,
    ) -> Flow:
        """Start a flow of ``work`` at most ``cap`` per second, ``delay_s`` from now.

        Its ``done`` event follows at once; until the delay has passed the flow waits
        (a round trip, training) and holds no share. With an unlimited capacity and a cap
        that will not change (``fixed_cap``), ``done`` is a plain timeout: one event for
        the delay and the data together, as an independent transfer. ``then``, if given,
        is called with the flow the moment it finishes, instead of ``done`` succeeding (a
        chain of flows then costs no event per link of the chain).
        """
        if not cap > 0:
            raise ValueError(f"a flow's cap must be positive, got {cap}")
        now = self.env.now
        self._seq += 1
        work, cap = float(work), float(cap)
        begin = now + delay_s
        if fixed_cap and math.isinf(self.capacity):
            return self._start_alone(work, cap, owner, begin, then)
        flow = Flow(owner, work, cap, self.env.event(), begin, seq=self._seq, state=_PENDING)
        flow.then = then
        if delay_s > 0:
            self.env.timeout(delay_s).callbacks.append(lambda _: self._begin(flow))
        else:
            self._begin(flow)
        return flow

    def _begin(self, flow: Flow) -> None:
        if flow.state != _PENDING:
            return  # stopped before its data began
        now = self.env.now
        flow.start_s = now
        if flow.work <= 0:
            self._finish(flow, now)
            return
        self._advance(now)
        self._enter(flow, now, flow.work)
        if self._n_level + self._n_capped > self.max_flows:
            self.max_flows = self._n_level + self._n_capped
        if now != self._last_begin_s:  # the first start of this instant settles at once
            self._last_begin_s = now
            self._settle(now)
        elif not self._settle_due:  # more starts at this instant: one settle after them all
            self._settle_due = True
            self.env.timeout(0).callbacks.append(self._settle_now)

    def _settle_now(self, _: simpy.Event) -> None:
        self._settle_due = False
        self._settle(self.env.now)

    def _start_alone(
        self, work: float, cap: float, owner: int, begin: float, then: Callable[[Flow], None] | None
    ) -> Flow:
        duration = work / cap
        flow = Flow(owner, work, cap, cast(simpy.Event, None), begin, seq=self._seq, alone=True)
        flow.key, flow.since_s, flow.since_work = begin + duration, begin, work
        done = flow.done = self.env.timeout(begin - self.env.now + duration, value=flow)

        def end(_: simpy.Event) -> None:
            if flow.state == _CAPPED:  # not stopped meanwhile
                flow.state, flow.end_s = _DONE, self.env.now
                if then is not None:
                    then(flow)

        done.callbacks.append(end)
        return flow

    def stop(self, flow: Flow) -> float:
        """Stop a running flow now (drop-out, round close); return the work it had done."""
        if not flow.running:
            return flow.work if flow.state == _DONE else self.done_work(flow)
        now = self.env.now
        if flow.alone or flow.state == _PENDING:
            remaining = _capped_remaining(flow, now) if flow.alone else flow.work
            flow.version += 1
            flow.state, flow.end_s, flow.key = _STOPPED, now, flow.work - remaining
            return flow.key
        self._advance(now)
        remaining = self._leave(flow, now)
        flow.state, flow.end_s = _STOPPED, now
        flow.key = flow.work - remaining  # work done, kept for done_work
        self._settle(now)
        return flow.key

    def set_cap(self, flow: Flow, cap: float) -> None:
        """Change a running flow's cap now (a bandwidth trace); the shares follow."""
        if not flow.running or cap == flow.cap:
            return
        if not cap > 0:
            raise ValueError(f"a flow's cap must be positive, got {cap}")
        if flow.alone:
            raise ValueError("a flow started with fixed_cap=True cannot change its cap")
        if flow.state == _PENDING:
            flow.cap = float(cap)
            return
        now = self.env.now
        self._advance(now)
        remaining = self._leave(flow, now)
        flow.cap = float(cap)
        self._enter(flow, now, remaining)
        self._settle(now)

    def done_work(self, flow: Flow) -> float:
        """Return the work a flow has done by now."""
        if flow.state == _DONE:
            return flow.work
        if flow.state == _STOPPED:
            return flow.key
        if flow.state == _PENDING:
            return 0.0
        now = self.env.now
        if flow.state == _CAPPED:
            return flow.work - _capped_remaining(flow, now)
        v = self._v + self._level_rate() * (now - self._t)
        return flow.work - max(0.0, flow.key - v)

    # -- the two sets ---------------------------------------------------------------------

    def _ref_rate(self, flow: Flow) -> float:
        return min(flow.cap, self.capacity)

    def _level_rate(self) -> float:
        if self._n_level == 0:
            return math.inf if self._capped_sum <= self.capacity else -math.inf
        return max(self.capacity - self._capped_sum, 0.0) / self._n_level

    def _advance(self, now: float) -> None:
        if self._n_level and now > self._t:
            self._v += self._level_rate() * (now - self._t)
        self._t = now

    def _enter(self, flow: Flow, now: float, remaining: float) -> None:
        """Put a flow in the set it will most likely stay in (:meth:`_settle` corrects).

        A cap at or above the capacity can never bind; otherwise the flow joins the level
        when its cap is above the level it would share.
        """
        if flow.cap >= self.capacity:
            self._enter_level(flow, now, remaining)
            return
        spare = self.capacity - self._capped_sum
        n = self._n_level
        if (flow.cap >= spare / (n + 1)) if n else (flow.cap > spare):
            self._enter_level(flow, now, remaining)
        else:
            self._enter_capped(flow, now, remaining)

    def _enter_capped(self, flow: Flow, now: float, remaining: float) -> None:
        flow.version += 1
        flow.state, flow.since_s, flow.since_v = _CAPPED, now, self._v
        flow.since_work = remaining
        flow.key = now + remaining / flow.cap
        self._n_capped += 1
        if math.isinf(self.capacity):
            self._arm(flow, flow.key - now)
            return  # nothing is ever shared: no bookkeeping for the level
        self._capped_sum += flow.cap
        heapq.heappush(self._capped_caps, (-flow.cap, flow.owner, flow.seq, flow.version, flow))
        self._arm(flow, flow.key - now)

    def _enter_level(self, flow: Flow, now: float, remaining: float) -> None:
        flow.version += 1
        flow.state, flow.since_s, flow.since_v = _LEVEL, now, self._v
        flow.key = self._v + remaining
        self._n_level += 1
        entry = (flow.key, flow.owner, flow.seq, flow.version, flow)
        heapq.heappush(self._level_keys, entry)
        if flow.cap < self.capacity:  # a cap at the capacity never binds: never leaves the level
            heapq.heappush(self._level_caps, (flow.cap, flow.owner, flow.seq, flow.version, flow))

    def _leave(self, flow: Flow, now: float) -> float:
        """Take a running flow out of its set; return its remaining work."""
        if flow.state == _CAPPED:
            remaining = _capped_remaining(flow, now)
            self._n_capped -= 1
            if not math.isinf(self.capacity):
                self._capped_sum = self._capped_sum - flow.cap if self._n_capped else 0.0
        else:
            remaining = max(0.0, flow.key - self._v)
            flow.shared_s += (now - flow.since_s) - (self._v - flow.since_v) / self._ref_rate(flow)
            self._n_level -= 1
            if self._n_level == 0:
                self._v = 0.0  # no level flow left: restart the counter (keeps it small)
        flow.version += 1  # its heap entries are stale from now on
        return remaining

    def _arm(self, flow: Flow, delay_s: float) -> None:
        version = flow.version
        timer = self.env.timeout(max(delay_s, 0.0))
        timer.callbacks.append(lambda _: self._capped_due(flow, version))

    def _capped_due(self, flow: Flow, version: int) -> None:
        if flow.version != version or flow.state != _CAPPED:
            return  # moved to the level, stopped or re-capped since
        now = self.env.now
        self._advance(now)
        self._leave(flow, now)
        self._finish(flow, now)
        self._settle(now)

    def _finish(self, flow: Flow, now: float) -> None:
        flow.state, flow.end_s = _DONE, now
        if flow.then is not None:
            flow.then(flow)
        else:
            flow.done.succeed(flow)

    @staticmethod
    def _peek(heap: list[tuple[float, int, int, int, Flow]], state: int) -> Flow | None:
        while heap:
            flow = heap[0][4]
            if flow.version == heap[0][3] and flow.state == state:
                return flow
            heapq.heappop(heap)
        return None

    def _settle(self, now: float) -> None:
        """Move flows across the sets until the level is consistent; re-arm the level wake."""
        if math.isinf(self.capacity):
            return
        peek = self._peek
        for _ in range(4 * (self._n_level + self._n_capped + 1)):
            level = self._level_rate()
            top = peek(self._capped_caps, _CAPPED) if self._n_capped else None
            if top is not None and top.cap > level:
                remaining = self._leave(top, now)
                self._enter_level(top, now, remaining)
                continue
            low = peek(self._level_caps, _LEVEL) if self._level_caps else None
            if low is not None and low.cap < level:
                remaining = self._leave(low, now)
                self._enter_capped(low, now, remaining)
                continue
            break
        if self._n_level:
            self._arm_level(now)

    def _arm_level(self, now: float) -> None:
        first = self._peek(self._level_keys, _LEVEL)
        if first is None:
            return
        level = self._level_rate()
        when = now + (first.key - self._v) / level if level > 0 else math.inf
        if when < self._wake_at or self._wake_at <= now:
            self._wake_at = when
            if math.isfinite(when):
                self.env.timeout(max(when - now, 0.0)).callbacks.append(self._level_due_cb)

    def _level_due_cb(self, _: simpy.Event) -> None:
        now = self.env.now
        if self._wake_at > now:
            return  # a later wake superseded this one... or an earlier one already ran
        self._wake_at = math.inf
        self._advance(now)
        level = self._level_rate()
        due: list[Flow] = []
        while True:
            first = self._peek(self._level_keys, _LEVEL)
            if first is None:
                break
            remaining = first.key - self._v
            if level > 0 and remaining > first.work * _REL_EPS and now + remaining / level > now:
                break
            heapq.heappop(self._level_keys)
            self._leave(first, now)
            due.append(first)
        for flow in sorted(due, key=_by_owner):
            self._finish(flow, now)
        self._settle(now)


def _capped_remaining(flow: Flow, now: float) -> float:
    elapsed = now - flow.since_s
    return max(0.0, flow.since_work - elapsed * flow.cap) if elapsed > 0 else flow.since_work


def _by_owner(flow: Flow) -> tuple[int, int]:
    return flow.owner, flow.seq
