"""Checkpoints of an asynchronous run: the models its state refers to, and putting them back.

An asynchronous run never pauses: a checkpoint at a version row holds the servers' models
and every model the protocol's state refers to (the bases of the trainings in flight and
of the updates queued or buffered, the edge models on their way to the cloud, the cloud
models on their way to edges, each edge's last cloud model). A resume replays the clock
without learning to the same version row; the same places then exist in the same order
and take their models back, and the trainings in flight are submitted again from their
bases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedsim.runtime.base import Runtime
from fedsim.sim.async_servers import Update

if TYPE_CHECKING:
    from fedsim.sim.async_driver import AsyncDriver

#: A place holding a model handle: (holder, attribute or index, a device training to redo).
Slot = tuple[Any, str | int, bool]


def slots(driver: AsyncDriver) -> list[Slot]:
    """Return every place holding a model handle, in a fixed order."""
    out: list[Slot] = []

    def update(u: Update) -> None:
        out.append((u, "base", False))
        out.append((u, "handle", u.device_id is not None))  # a training, or an edge's model

    for key in sorted(driver.flights):
        update(driver.flights[key])
    for server in [driver.cloud, *driver.edges]:
        for u in [*server.queue, *server.buffer]:
            update(u)
    backhaul = driver.backhaul
    for n in sorted(backhaul.forwards):
        update(backhaul.forwards[n])
    for n in sorted(backhaul.replies):
        out.append((backhaul.replies[n], 0, False))
    out.extend((backhaul.cloud_model, e, False) for e in range(len(backhaul.cloud_model)))
    return out


def state(driver: AsyncDriver, runtime: Runtime) -> dict[str, Any]:
    """Return the models the live updates and edges refer to, and where each goes."""
    index: dict[int, int] = {}
    handles: list[Any] = []
    where: list[int] = []
    for holder, attr, train in slots(driver):
        h = _get(holder, attr)
        if train:
            where.append(-1 if h is None else -2)  # -2: trained; redone from its base
            continue
        if id(h) not in index:
            index[id(h)] = len(handles)
            handles.append(h)
        where.append(index[id(h)])
    return {"models": runtime.read_models(handles), "slots": where}


def restore(driver: AsyncDriver, runtime: Runtime, models: dict[str, Any]) -> None:
    """Put a checkpoint's models back in their places (after the replay reached it)."""
    runtime.load_models(models)
    extra = models["async"]
    handles: dict[int, Any] = {}
    for (holder, attr, train), slot in zip(slots(driver), extra["slots"], strict=True):
        if train:
            if slot == -2:
                u = holder
                u.handle = runtime.train_from([(u.device_id, u.key, u.base)])[0]
            continue
        if slot not in handles:
            handles[slot] = runtime.put_model(extra["models"][slot])
        _set(holder, attr, handles[slot])


def _get(holder: Any, attr: str | int) -> Any:
    return holder[attr] if isinstance(attr, int) else getattr(holder, attr)


def _set(holder: Any, attr: str | int, value: Any) -> None:
    if isinstance(attr, int):
        holder[attr] = value
    else:
        setattr(holder, attr, value)
