"""The personalisation stage after federated training (PerFit's third stage) on the clock.

An algorithm that personalises by local work after training (FTL's fine-tuning) lists its
steps in :meth:`~fedsim.algorithms.base.Algorithm.personalisation_steps`. Once the rounds
end, every device runs those steps on its own hardware, all devices at once: the stage
lasts as long as the slowest device, and each device spends its compute energy. Times are
the profiles' per-step seconds without jitter, so the stage is a function of the scenario
alone -- the same on every runtime and after a resume. It moves no bytes (each device
already holds the final model it fine-tunes).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from fedsim.algorithms.base import Algorithm
from fedsim.models import ModelInfo
from fedsim.profiles import ProfileLibrary
from fedsim.results import csv_cell
from fedsim.sim.costs import energy_j, steps_s
from fedsim.sim.population import Population

PERSONALISATION_COLUMNS = ("device_id", "profile", "samples", "steps", "compute_s", "energy_j")


@dataclass(frozen=True)
class PersonalisationStage:
    """The stage's per-device rows and its totals.

    Attributes
    ----------
    rows : list of tuple
        One row per device, :data:`PERSONALISATION_COLUMNS`.
    duration_s : float
        Virtual seconds of the stage (the slowest device).
    energy_j : float
        Joules over all devices.
    """

    rows: list[tuple[object, ...]]
    duration_s: float
    energy_j: float

    def files(self) -> dict[str, str]:
        """Return ``personalisation.csv``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(PERSONALISATION_COLUMNS)
        writer.writerows([csv_cell(v) for v in row] for row in self.rows)
        return {"personalisation.csv": out.getvalue()}

    def summary(self, virtual_time_s: float) -> dict[str, float]:
        """Return the run summary's entries, given the training's virtual seconds."""
        return {
            "personalisation_s": self.duration_s,
            "personalisation_energy_j": self.energy_j,
            "virtual_time_with_personalisation_s": virtual_time_s + self.duration_s,
        }


def personalisation_stage(
    algorithm: Algorithm,
    population: Population,
    profiles: ProfileLibrary,
    model: ModelInfo,
    samples: np.ndarray,
) -> PersonalisationStage | None:
    """Return the stage every device runs after training, or None if the algorithm has none.

    Parameters
    ----------
    algorithm : Algorithm
        Gives each device's personalisation steps (batch sizes) by its sample count.
    population : Population
        The devices and their hardware.
    profiles : ProfileLibrary
        Hardware profiles (per-step seconds, compute power).
    model : ModelInfo
        The model's name and forward FLOPs per sample.
    samples : numpy.ndarray
        Training samples per device, by device id.
    """
    if type(algorithm).personalisation_steps is Algorithm.personalisation_steps:
        return None  # no stage: no need to visit every device
    rows: list[tuple[object, ...]] = []
    longest, total_j = 0.0, 0.0
    for device_id in range(population.num_devices):
        group = population.group(device_id)
        hw = profiles.device(group.hardware)
        n = int(samples[device_id])
        batches = algorithm.personalisation_steps(n)
        compute_s = steps_s(hw, model.name, model.forward_flops_per_sample, batches)
        joules = energy_j(hw, 0.0, compute_s, 0.0, 0.0).total_j
        rows.append((device_id, group.hardware, n, len(batches), compute_s, joules))
        longest, total_j = max(longest, compute_s), total_j + joules
    if not any(row[3] for row in rows):
        return None
    return PersonalisationStage(rows, longest, total_j)
