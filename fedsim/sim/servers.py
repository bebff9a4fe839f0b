"""The servers' side of a round on the clock: edges fetch the global model, aggregate, forward.

The hierarchy's accounting rules (docs/timing.md):

* after every cloud aggregation each edge's copy of the global model is stale; an edge
  fetches the new one over its backhaul before its first use (the first round it has
  selected devices), and its devices wait for that fetch;
* an edge aggregates the updates it kept in a round on its compute, at once after the
  round closes;
* at a sync, every edge that aggregated updates since the last sync uploads its model
  over its backhaul, whether or not it had devices in that very round;
* the cloud aggregates the models it received: as many as edges uploaded.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import simpy

from fedsim.sim.costs import Transfer, aggregation_flops
from fedsim.sim.network import Network

CLOUD_OWNER = -1


def fetch_models(net: Network, transfers: Mapping[int, Transfer]) -> dict[int, simpy.Event]:
    """Start each listed edge's fetch of the global model; return the events of their ends."""
    return {
        e: net.backhaul_down[e].start(t.bits, t.cap_bps, e, delay_s=t.rtt_s).done
        for e, t in sorted(transfers.items())
    }


def serve(
    env: simpy.Environment,
    net: Network,
    counts: Mapping[int, int],
    uploads: Mapping[int, Transfer],
    num_params: int,
) -> Generator[simpy.Event, Any, tuple[float, float]]:
    """Aggregate at the edges, forward to the cloud, aggregate there; return (edge_s, cloud_s).

    Parameters
    ----------
    env : simpy.Environment
        The clock (now: the round's close).
    net : Network
        The shared resources.
    counts : mapping of int to int
        Per edge, the updates it kept this round.
    uploads : mapping of int to Transfer
        Per edge uploading to the cloud (a sync), its backhaul transfer; empty: no sync.
    num_params : int
        Values averaged per update (the payload's).
    """
    start = env.now

    def edge(edge_id: int) -> Generator[simpy.Event, Any, None]:
        count = counts.get(edge_id, 0)
        if count:
            flops = aggregation_flops(num_params, count)
            compute = net.edge_compute[edge_id]
            yield compute.start(flops, net.edge_flops_per_s[edge_id], edge_id).done
        t = uploads.get(edge_id)
        if t is not None:
            backhaul = net.backhaul_up[edge_id]
            yield backhaul.start(t.bits, t.cap_bps, edge_id, delay_s=t.rtt_s).done

    procs = [env.process(edge(e)) for e in sorted(set(counts) | set(uploads))]
    if procs:
        yield env.all_of(procs)
    edge_s = env.now - start
    if not uploads:
        return edge_s, 0.0
    cloud_start = env.now
    flops = aggregation_flops(num_params, len(uploads))
    yield net.cloud_compute.start(flops, net.cloud_flops_per_s, CLOUD_OWNER).done
    return edge_s, env.now - cloud_start
