"""The round protocols of a scenario: synchronous rounds, or asynchronous updates.

``rounds.kind`` chooses; a missing kind means ``sync``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from fedsim.bounds import in_range
from fedsim.config_types import Count, PositiveInt, Strict, VirtualSeconds, field_error


class FailureDetectionSpec(Strict):
    """How the server learns that a device dropped out.

    ``instant``: at the moment it drops. ``timeout`` (default): ``timeout_s`` after its
    last sign of life (missed heartbeats), so a drop-out can hold a round open.
    """

    kind: Literal["instant", "timeout"] = "timeout"
    timeout_s: VirtualSeconds = 30.0


class RoundsSpec(Strict):
    """The synchronous round protocol (hierarchical when ``cloud_every > 1``).

    Ranges: ``participation`` in (0, 1]; ``over_selection`` in [1, 10] (asking for more
    than ten times the devices a round keeps is no protocol: Bonawitz et al. 2019 use
    1.3); ``deadline_s`` in (0, 1e9] virtual seconds; ``cloud_every`` 1 to 10**7.
    """

    kind: Literal["sync"] = "sync"
    participants: PositiveInt | None = None
    participation: Annotated[float, in_range(0, 1, low_open=True)] | None = None
    over_selection: Annotated[float, in_range(1, 10)] = 1.0
    deadline_s: VirtualSeconds | None = None
    min_report_fraction: Annotated[float, in_range(0, 1)] = 0.0
    cloud_every: Count = 1
    failure_detection: FailureDetectionSpec = FailureDetectionSpec()

    @model_validator(mode="after")
    def _one_of_count_or_fraction(self) -> RoundsSpec:
        if self.participants is not None and self.participation is not None:
            raise field_error(
                ("participation",),
                "give either participants (a count K) or participation (a fraction C), not both",
                self.participation,
            )
        return self


class StalenessSpec(Strict):
    """How an update's weight falls with its staleness τ (Xie et al. 2019, FedAsync §5.2).

    ``constant``: s(τ) = 1. ``polynomial``: s(τ) = (τ + 1)^-a. ``hinge``: s(τ) = 1 for
    τ ≤ b, else 1 / (a (τ - b) + 1). ``a`` in [0, 100], ``b`` 0 to 10**7.
    """

    kind: Literal["constant", "polynomial", "hinge"] = "constant"
    a: Annotated[float, in_range(0, 100)] = 0.5
    b: Annotated[int, Field(ge=0, le=10**7)] = 4


class ServerRuleSpec(Strict):
    """How a server applies the updates it receives.

    ``fedasync`` (Xie et al. 2019): every update is mixed in at once,
    x ← (1 - α s(τ)) x + α s(τ) x_update; ``alpha`` in (0, 1]. ``fedbuff`` (Nguyen et al.
    2022): ``buffer_size`` (K) updates are buffered, then
    x ← x + η / K Σ s(τ_i) (x_i - base_i) with ``server_lr`` η in (0, 100].
    """

    kind: Literal["fedasync", "fedbuff"] = "fedasync"
    alpha: Annotated[float, in_range(0, 1, low_open=True)] = 0.6
    buffer_size: Count = 10
    server_lr: Annotated[float, in_range(0, 100, low_open=True)] = 1.0
    staleness: StalenessSpec = StalenessSpec()


class AsyncRoundsSpec(Strict):
    """The asynchronous protocol (docs/async.md): a global version per update or buffer.

    At most ``concurrency`` (M, 1 to 10**6) devices train at any moment; a device that
    reports, drops or times out (``deadline_s`` after its dispatch) frees its slot, and the
    next device is chosen among the idle on-line ones by ``selection`` (``uniform``, or
    ``module:Class``). Updates staler than ``max_staleness`` versions are discarded.
    ``edges``: each edge applies its own devices' updates with this rule and forwards its
    model to the cloud, which applies it with ``server`` (staleness in cloud versions);
    absent, the cloud applies device updates itself and edges only relay them.
    """

    kind: Literal["async"]
    concurrency: Annotated[int, Field(gt=0, le=10**6)] = 10
    deadline_s: VirtualSeconds | None = None
    max_staleness: Annotated[int, Field(ge=0, le=10**7)] | None = None
    selection: str = "uniform"
    server: ServerRuleSpec = ServerRuleSpec()
    edges: ServerRuleSpec | None = None
    failure_detection: FailureDetectionSpec = FailureDetectionSpec()


def _kind(value: Any) -> str:
    """Return the protocol a ``rounds`` value asks for (``sync`` when it names none)."""
    kind = value.get("kind", "sync") if isinstance(value, dict) else getattr(value, "kind", "sync")
    return "async" if kind == "async" else "sync"


#: ``rounds:`` — the synchronous or the asynchronous protocol, by ``kind``.
RoundsProtocol = Annotated[
    Annotated[RoundsSpec, Tag("sync")] | Annotated[AsyncRoundsSpec, Tag("async")],
    Discriminator(_kind),
]
