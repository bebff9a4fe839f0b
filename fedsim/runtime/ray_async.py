"""The Ray runtime's side of the asynchronous protocol: trainings and server steps as a DAG.

The driver never waits for training here. A device's training is submitted (grouped with
the others queued, one call per device host) when an update that is not yet submitted is
first applied: every queued training's base model then exists as an object reference,
and none of them depends on another, so the host calls can run while earlier ones and
the servers' steps are still running. A server step is an actor call taking the updates'
and the bases' references; Ray runs each call once its arguments exist and the actor's
earlier calls are done, so steps apply in the driver's (virtual-time) order whatever
order trainings finish in. The driver runs ahead of the actors by at most
``RUN_AHEAD`` server steps, and reads every step's acknowledgement, so that a step that
could not run (a dead device host) stops the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedsim.algorithms.base import State
from fedsim.runtime.base import CLOUD

#: Server steps the driver may submit before the oldest has run.
RUN_AHEAD = 256


@dataclass(eq=False)
class RayJob:
    """An asynchronous device training: queued, then row ``row`` of host call ``call``."""

    device_id: int
    key: int
    base: Any
    call: Any = None
    row: int = -1


class RayAsync:
    """Submits asynchronous trainings and server steps to the actors of a Ray runtime.

    Parameters
    ----------
    hosts : callable
        Returns the current device-host actors (a list indexed by host).
    cloud, edges : actor handles
        The cloud and edge actors.
    initial : ObjectRef
        The initial global model.
    get : callable
        ``ray.get`` with the runtime's time-out and error messages.
    used : callable
        Told the device trainings a server step uses (their private values are kept).
    """

    def __init__(
        self, hosts: Callable[[], list[Any]], cloud: Any, edges: list[Any], initial: Any,
        get: Callable[[Any, str], Any], used: Callable[[list[RayJob]], None],
    ) -> None:  # fmt: skip
        self._hosts = hosts
        self._actors = {CLOUD: cloud, **dict(enumerate(edges))}
        self._models: dict[int, Any] = dict.fromkeys(self._actors, initial)
        self._queued: list[RayJob] = []
        self._steps: deque[tuple[int, Any]] = deque()  # (step number, acknowledgement)
        self.submitted = 0  # server steps submitted so far
        self._get = get
        self._used = used

    def server_model(self, server: int) -> Any:
        """Return the reference of the server's latest model."""
        return self._models[server]

    def train_from(self, jobs: Sequence[tuple[int, int, Any]]) -> list[RayJob]:
        """Queue the trainings (submitted when one of them is first applied)."""
        out = [RayJob(int(d), int(key), base) for d, key, base in jobs]
        self._queued.extend(out)
        return out

    def _submit_queued(self) -> None:
        """Submit every queued training: one call per device host, each job from its base."""
        hosts = self._hosts()
        by_host: dict[int, list[RayJob]] = {}
        for job in self._queued:
            by_host.setdefault(job.device_id % len(hosts), []).append(job)
        self._queued = []
        for h, jobs in sorted(by_host.items()):
            bases: dict[Any, int] = {}
            spec = [(j.device_id, j.key, bases.setdefault(j.base, len(bases))) for j in jobs]
            call = hosts[h].train_jobs.remote(spec, *bases)
            for row, job in enumerate(jobs):
                job.call, job.row = call, row

    def apply(self, server: int, kind: str, items: Sequence[tuple[Any, Any, float]]) -> None:
        """Submit the server step; its result becomes the server's latest model."""
        if any(isinstance(u, RayJob) and u.call is None for u, _, _ in items):
            self._submit_queued()
        refs: dict[Any, int] = {}
        spec = []
        for update, base, c in items:
            if isinstance(update, RayJob):
                what: tuple[Any, ...] = ("row", refs.setdefault(update.call, len(refs)), update.row)
            else:
                what = ("model", refs.setdefault(update, len(refs)))
            # FedAsync mixes without the base: the actor need not fetch it
            b = refs.setdefault(base, len(refs)) if kind != "fedasync" else -1
            spec.append((what, b, c))
        new, done = self._actors[server].apply.remote(kind, spec, *refs)
        self._used([u for u, _, _ in items if isinstance(u, RayJob)])
        self._models[server] = new
        # A step whose update or base failed (a dead device host) never runs, and the
        # actor's later steps would run without it: each step's small acknowledgement is
        # read (at most RUN_AHEAD steps late, and before any evaluation or checkpoint), so
        # a failure stops the run instead of changing it silently.
        self._steps.append((self.submitted, done))
        self.submitted += 1
        if len(self._steps) > RUN_AHEAD:
            self.settle(self.submitted - RUN_AHEAD)

    def receive(self, edge_id: int, model: Any) -> None:
        """Hand a cloud model to an edge actor."""
        self._actors[edge_id].receive.remote(model)
        self._models[edge_id] = model

    def discard(self, handles: Sequence[Any]) -> None:
        """Drop queued trainings that virtual time discarded (they are never submitted)."""
        gone = {id(h) for h in handles if isinstance(h, RayJob) and h.call is None}
        if gone:
            self._queued = [j for j in self._queued if id(j) not in gone]

    def settle(self, until: int | None = None) -> None:
        """Read the acknowledgements of the steps before step ``until`` (None: all).

        A step that could not run raises :class:`~fedsim.errors.RuntimeFailure` here.
        """
        done = []
        while self._steps and (until is None or self._steps[0][0] < until):
            done.append(self._steps.popleft()[1])
        if done:
            self._get(done, "applying asynchronous updates")

    def reset_models(self) -> None:
        """Point every server at its actor's model (after the actors' models were restored)."""
        self._models = {s: a.model.remote() for s, a in self._actors.items()}

    def read_models(self, handles: Sequence[Any]) -> list[State]:
        """Fetch models by reference."""
        return list(self._get(list(handles), "reading models for a checkpoint"))

    def busy_intervals(self) -> list[tuple[int, float, float]]:
        """Return ``(host, start, end)`` wall-clock seconds of the hosts' training calls."""
        hosts = self._hosts()
        got = self._get([h.intervals.remote() for h in hosts], "reading host timings")
        return [(h, t0, t1) for h, spans in enumerate(got) for t0, t1 in spans]
