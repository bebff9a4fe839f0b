"""The Ray runtime: cloud, edge and device-host actors; the driver holds only references."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from fedsim.algorithms.base import State, build_algorithm
from fedsim.config import RuntimeSpec
from fedsim.errors import RuntimeFailure
from fedsim.runtime.base import Evaluation, LearningSetup, Runtime
from fedsim.runtime.evaluation import combine_scores, num_blocks
from fedsim.runtime.nodes import make_model
from fedsim.runtime.ray_actors import CloudActor, DeviceHostActor, EdgeActor, light_setup
from fedsim.runtime.ray_async import RayAsync, RayJob
from fedsim.runtime.ray_setup import ray_reason, start_ray

MAX_RECOVERIES = 3  # restarts in a row before a failure stops the run


@dataclass
class _HostJob:
    """A device-host call, kept until its updates are aggregated (to re-run it)."""

    host: int
    base: Any
    round_index: int
    ids: list[int]

    def describe(self) -> str:
        """Say what the call does, for messages."""
        return (
            f"device host {self.host} training {len(self.ids)} devices in round {self.round_index}"
        )


@dataclass
class _EdgeJob:
    """An edge's aggregation of host calls' rows, kept until it succeeded."""

    edge_id: int
    rows: list[tuple[int, int]]
    calls: list[Any]
    ref: Any


@dataclass(frozen=True)
class RayHandle:
    """A device's update: row ``row`` of the batch host ``host``'s call returns (``call``);
    the training of device ``device_id`` in round ``key``."""  # noqa: D205, D209

    call: Any
    row: int
    device_id: int = -1
    key: int = -1
    host: int = 0


class RayRuntime(Runtime):
    """Runs the model math on Ray actors: one cloud, one per edge, ``workers`` device hosts.

    Devices are assigned to hosts by ``device_id % workers``. Every wait on Ray is bounded
    by ``spec.timeout_s``; a dead actor or a time-out becomes a :class:`RuntimeFailure`
    naming the actor and what it was doing. Ray is shut down on :meth:`close` if this
    runtime started it.

    Parameters
    ----------
    setup : LearningSetup
        The learning side of the scenario.
    spec : RuntimeSpec
        Workers, address, timeout, dashboard, ``on_failure``.

    With ``on_failure: recover`` a dead device-host actor is replaced by a new one with the
    same devices, and every host call of the dead one whose updates were not yet
    aggregated is run again from the same base model: training is keyed by seed, device
    and round, so the updates, and every result, are those of an undisturbed run. Each
    round's aggregations are then confirmed before the next round trains (one wait per
    round). A dead edge or cloud actor holds model state only a checkpoint has: it stops
    the run, which ``fedsim resume`` continues.
    """

    def __init__(self, setup: LearningSetup, spec: RuntimeSpec) -> None:
        self._timeout_s = spec.timeout_s
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            start_ray(spec)
        try:
            self._start(setup, spec)
        except BaseException:
            self.close()
            raise

    def _start(self, setup: LearningSetup, spec: RuntimeSpec) -> None:
        light = light_setup(setup)
        self._num_test = setup.dataset.global_test_rows
        dataset_ref = ray.put(setup.dataset)
        n_hosts = min(spec.workers, max(1, len(setup.partitions)))
        self._num_hosts = n_hosts
        # one CPU per host, or an equal share when more hosts than CPUs are asked for
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        host_cpus = min(1.0, cpus / n_hosts)

        def make_host(h: int) -> Any:
            return DeviceHostActor.options(num_cpus=host_cpus).remote(  # type: ignore[attr-defined]
                h, light, dataset_ref,
                {d: p for d, p in enumerate(setup.partitions) if d % n_hosts == h},
            )  # fmt: skip

        self._make_host = make_host
        self._hosts = [make_host(h) for h in range(n_hosts)]
        self._recover = spec.on_failure == "recover"
        self._jobs: dict[Any, _HostJob] = {}  # host call ref -> the call (recover only)
        self._edge_jobs: list[_EdgeJob] = []
        self.failures: list[str] = []
        self._cloud = CloudActor.remote(light, dataset_ref)  # type: ignore[attr-defined]
        initial = self._cloud.model.remote()
        self._edges = [
            EdgeActor.remote(light, initial)  # type: ignore[attr-defined]
            for _ in range(setup.num_edges)
        ]
        # return ref -> what it was (for error messages): host calls (large update batches,
        # waited for but never fetched by the driver) and the small edge calls
        self._host_calls: dict[Any, str] = {}
        self._calls: dict[Any, str] = {}
        # Wait until every actor process has started and built its node, so that start-up
        # (worker processes importing torch, dataset views) counts as set-up, not round 0.
        self._async = RayAsync(
            lambda: self._hosts, self._cloud, self._edges, initial, self._get,
            lambda jobs: self._resolve(jobs, used=True),
        )  # fmt: skip
        algorithm = build_algorithm(setup.algorithm)
        algorithm.bind(make_model(light))
        self._private = bool(algorithm.private)  # devices keep private values in their hosts
        self._global_model = not algorithm.keeps_model  # fd: no global model to score
        actors = [*self._hosts, *self._edges, self._cloud]
        self._get([a.__ray_ready__.remote() for a in actors], "starting the actors")
        self._get(initial, "starting the cloud actor")

    def _get(self, refs: Any, what: str) -> Any:
        """``ray.get`` with the time-out; failures name what was being done."""
        try:
            return ray.get(refs, timeout=self._timeout_s)
        except GetTimeoutError:
            raise self._timed_out(what) from None
        except RayActorError as exc:
            raise RuntimeFailure(
                f"an actor died while {what}: {self._culprit()}{ray_reason(str(exc))}"
            ) from None
        except RayError as exc:
            raise RuntimeFailure(
                f"failed while {what}: {self._culprit()}{ray_reason(str(exc))}"
            ) from None

    def _timed_out(self, what: str) -> RuntimeFailure:
        return RuntimeFailure(
            f"timed out after {self._timeout_s:g} s while {what} "
            "(raise runtime.timeout_s if the work is simply slow)"
        )

    def _culprit(self) -> str:
        """Name the device-host calls that failed, if any (checked without blocking)."""
        bad = []
        for ref, what in [*self._host_calls.items(), *self._calls.items()]:
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    ray.get(ref, timeout=0)
                except RayError:
                    bad.append(what)
        return ("; ".join(sorted(set(bad))) + ": ") if bad else ""

    def train(self, edge_id: int, round_index: int, device_ids: Sequence[int]) -> list[RayHandle]:
        """Submit one call per host for its share of ``device_ids``; return one handle each."""
        if self._recover and self._edge_jobs:
            self._settle(f"before round {round_index}")
        base = self._edges[edge_id].model.remote()
        by_host: dict[int, list[int]] = {}
        for d in device_ids:
            by_host.setdefault(int(d) % self._num_hosts, []).append(int(d))
        handle_of: dict[int, RayHandle] = {}
        for h, ids in sorted(by_host.items()):
            job = _HostJob(h, base, round_index, ids)
            ref = self._hosts[h].train.remote(base, round_index, ids)
            self._host_calls[ref] = job.describe()
            if self._recover:
                self._jobs[ref] = job
            handle_of.update(
                (d, RayHandle(ref, row, d, round_index, h)) for row, d in enumerate(ids)
            )
        return [handle_of[int(d)] for d in device_ids]

    def aggregate_edge(self, edge_id: int, handles: Sequence[RayHandle]) -> None:
        """Hand the host calls' refs and the rows to take, in order, to the edge actor."""
        calls: dict[Any, int] = {}
        rows = [(calls.setdefault(h.call, len(calls)), h.row) for h in handles]
        ref = self._edges[edge_id].aggregate.remote(rows, *calls)
        self._calls[ref] = f"edge {edge_id} aggregating {len(handles)} updates"
        self._resolve(handles, used=True)
        if self._recover:
            self._edge_jobs.append(_EdgeJob(edge_id, rows, list(calls), ref))

    # -- recovery (on_failure: recover) -----------------------------------------------------

    def _settle(self, what: str) -> None:
        """Confirm the pending aggregations; after a device host died, redo what it lost."""
        for _ in range(MAX_RECOVERIES + 1):
            failed = []
            for job in self._edge_jobs:
                try:
                    ray.get(job.ref, timeout=self._timeout_s)
                except GetTimeoutError:
                    raise self._timed_out(what) from None
                except RayError:
                    failed.append(job)
            if not failed:
                self._edge_jobs.clear()
                self._jobs.clear()
                return
            dead = self._restart_dead_hosts(what)
            if not dead:  # not a device host: an edge died, or training raised
                self._get([job.ref for job in failed], what)
            remap: dict[Any, Any] = {}
            for job in failed:
                job.calls = [self._rerun(call, dead, remap) for call in job.calls]
                del self._calls[job.ref]
                job.ref = self._edges[job.edge_id].aggregate.remote(job.rows, *job.calls)
                self._calls[job.ref] = f"edge {job.edge_id} aggregating again"
        raise RuntimeFailure(f"device hosts kept dying while {what} ({MAX_RECOVERIES} restarts)")

    def _rerun(self, call: Any, dead: set[int], remap: dict[Any, Any]) -> Any:
        """Return ``call``, or a new run of it if its host died (each call re-run once)."""
        job = self._jobs[call]
        if job.host not in dead:
            return call
        if call not in remap:
            new = self._hosts[job.host].train.remote(job.base, job.round_index, job.ids)
            self._jobs[new] = job
            self._host_calls.pop(call, None)
            self._host_calls[new] = job.describe()
            remap[call] = new
        return remap[call]

    def _restart_dead_hosts(self, what: str) -> set[int]:
        """Replace every dead device-host actor by a new one with the same devices."""
        dead = set()
        for h, actor in enumerate(self._hosts):
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=self._timeout_s)
            except RayActorError:
                dead.add(h)
        for h in sorted(dead):
            self._hosts[h] = self._make_host(h)
            line = f"device host {h} died {what}; restarted it and re-ran its lost training"
            self.failures.append(line)
            print(f"warning: {line}", file=sys.stderr)
        self._get([self._hosts[h].__ray_ready__.remote() for h in sorted(dead)], "restarting")
        return dead

    def sync_cloud(self) -> None:
        """Aggregate edges at the cloud and push the new model back; waits for it all."""
        if self._recover:
            self._settle("aggregating edge models at the cloud")
        new = self._cloud.aggregate.remote(*(e.upload.remote() for e in self._edges))
        done = [e.receive.remote(new) for e in self._edges]
        what = "aggregating edge models at the cloud"
        # Wait for the host calls without fetching their batches into the driver (a host
        # failure surfaces through the edge call that reads its batch); fetch only small
        # values.
        host_refs = list(self._host_calls)
        ready, _ = ray.wait(
            host_refs, num_returns=len(host_refs), timeout=self._timeout_s, fetch_local=False
        )
        if len(ready) < len(host_refs):
            raise self._timed_out(what)
        self._get(list(self._calls) + done, what)
        self._calls.clear()
        self._host_calls.clear()

    def models(self) -> dict[str, Any]:
        """Fetch the cloud's and the edges' models and the edges' weights."""
        what = "reading the models for a checkpoint"
        if self._recover:
            self._settle(what)
        cloud = self._get(self._cloud.model.remote(), what)
        cloud_opt = self._get(self._cloud.server_state.remote(), what)
        edges = self._get([e.snapshot.remote() for e in self._edges], what)
        private: dict[str, Any] = {}
        for part in self._get([h.private_state.remote() for h in self._hosts], what):
            private.update(part)
        return {
            "private": dict(sorted(private.items(), key=lambda kv: int(kv[0]))),
            "cloud": cloud,
            "cloud_opt": cloud_opt,
            "edges": [state for state, _ in edges],
            "edge_weights": [weight for _, weight in edges],
        }

    def load_models(self, models: dict[str, Any]) -> None:
        """Restore the cloud's and the edges' models on their actors."""
        done = [self._cloud.restore.remote(models["cloud"], models.get("cloud_opt", {}))]
        done += [
            e.restore.remote(state, weight)
            for e, state, weight in zip(
                self._edges, models["edges"], models["edge_weights"], strict=True
            )
        ]
        private = models.get("private", {})
        done += [
            host.restore_private.remote(
                {d: v for d, v in private.items() if int(d) % self._num_hosts == h}
            )
            for h, host in enumerate(self._hosts)
        ]
        self._get(done, "restoring the models from a checkpoint")
        self._async.reset_models()

    # -- the asynchronous protocol (fedsim/runtime/ray_async.py) ----------------------------

    def server_model(self, server: int) -> Any:
        """Return the reference of the server's latest model."""
        return self._async.server_model(server)

    def train_from(self, jobs: Sequence[tuple[int, int, Any]]) -> list[RayJob]:
        """Queue trainings; they are submitted when one of them is first applied."""
        return self._async.train_from(jobs)

    def apply(self, server: int, kind: str, items: Sequence[tuple[Any, Any, float]]) -> None:
        """Submit a server step (never waits for training)."""
        self._async.apply(server, kind, items)

    def receive(self, edge_id: int, model: Any) -> None:
        """Hand a cloud model to an edge actor."""
        self._async.receive(edge_id, model)

    def read_models(self, handles: Sequence[Any]) -> list[State]:
        """Fetch models by reference."""
        self._async.settle()
        return self._async.read_models(handles)

    def put_model(self, state: State) -> Any:
        """Put a model into the object store."""
        return ray.put(state)

    def discard(self, handles: Sequence[Any]) -> None:
        """Forget updates virtual time discarded: queued asynchronous trainings are never
        submitted; trained ones' private values are dropped in their hosts."""  # noqa: D205, D209
        self._async.discard(handles)
        self._resolve(handles, used=False)

    def _resolve(self, handles: Sequence[Any], used: bool) -> None:
        """Tell the hosts what became of these trainings' private values (if any)."""
        if not self._private:
            return
        by_host: dict[int, list[tuple[int, int]]] = {}
        for h in handles:
            if isinstance(h, RayJob) and h.call is None:
                continue  # never submitted: nothing pending
            by_host.setdefault(h.device_id % self._num_hosts, []).append((h.device_id, h.key))
        for host, jobs in sorted(by_host.items()):
            args = (jobs, []) if used else ([], jobs)
            self._hosts[host].resolve.remote(*args)

    def busy_intervals(self) -> list[tuple[int, float, float]]:
        """Return ``(host, start, end)`` wall-clock seconds of asynchronous training calls."""
        return self._async.busy_intervals()

    def evaluate(self, ua_device_ids: Sequence[int]) -> Evaluation:
        """Evaluate the global model on the cloud and UA on the hosts, in parallel."""
        return self.submit_evaluation(ua_device_ids)()

    def submit_evaluation(self, ua_device_ids: Sequence[int]) -> Callable[[], Evaluation]:
        """Queue the evaluation of the current global model; the callable waits for it.

        Actor calls run in submission order, so the cloud evaluates the model as it is now
        even if later rounds are queued before the values are read.
        """
        model = self._cloud.model.remote()
        blocks = range(num_blocks(self._num_test))
        by_host: dict[int, list[int]] = {}
        for d in ua_device_ids:
            by_host.setdefault(int(d) % self._num_hosts, []).append(int(d))

        def submit() -> tuple[list[Any], dict[int, Any]]:
            # the device hosts wait for the next round anyway: they score the test blocks
            score_refs = [
                host.score_blocks.remote(model, list(blocks[h :: self._num_hosts]))
                for h, host in enumerate(self._hosts)
                if self._global_model
            ]
            ua_refs = {h: self._hosts[h].evaluate.remote(model, ids) for h, ids in by_host.items()}
            return score_refs, ua_refs

        refs = submit()

        def read(score_refs: list[Any], ua_refs: dict[int, Any]) -> Evaluation:
            accuracy: float | None = None
            loss: float | None = None
            if score_refs:
                per_host = self._get(score_refs, "evaluating the global model")
                scores = [per_host[b % self._num_hosts][b // self._num_hosts] for b in blocks]
                accuracy, loss = combine_scores(scores, self._num_test)
            ua: dict[int, float] = {}
            before: dict[int, float] = {}
            for h, ref in sorted(ua_refs.items()):
                after, pre = self._get(ref, f"device host {h} evaluating UA")
                ua.update(zip(by_host[h], after, strict=True))
                if pre:  # algorithms that personalise: every device's
                    before.update(zip(by_host[h], pre, strict=True))
            return Evaluation(accuracy, loss, ua, before)

        steps = self._async.submitted

        def values() -> Evaluation:
            nonlocal refs
            self._async.settle(steps)  # the asynchronous steps before it all ran
            for _ in range(MAX_RECOVERIES):
                try:
                    return read(*refs)
                except RuntimeFailure:
                    if not self._recover or not self._restart_dead_hosts("evaluating"):
                        raise
                    refs = submit()  # a device host died: evaluate again on its successor
            return read(*refs)

        return values

    def close(self) -> None:
        """Kill the actors and shut Ray down if this runtime started it."""
        for actor in [*getattr(self, "_hosts", []), *getattr(self, "_edges", [])]:
            ray.kill(actor)
        if hasattr(self, "_cloud"):
            ray.kill(self._cloud)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
