"""MTFL's CIFAR-10 CNN on synthetic CIFAR-shaped data (scenarios/mtfl/cifar_cnn_synthetic.yaml,
shrunk): each device's upload is exactly the model's float values (FedAvg), plus two Adam
moments per weight and a step count (FedAvg-Adam, about 3x), minus the BN γ, β (MTFL)."""

import pandas as pd
import pytest
import torch
from helpers import REPO
from torch import nn

from fedsim.api import run
from fedsim.config import load_scenario
from fedsim.models.zoo import build_model

SCENARIO = REPO / "scenarios" / "mtfl" / "cifar_cnn_synthetic.yaml"
# 10 devices, 5 a round, 1 round; 400 samples of 10 users (5 test each): 35 train a device
SMALL = (
    "topology.edges.0.devices.0.count=5", "topology.edges.0.devices.1.count=5",
    "data.options.num_samples=400", "data.options.num_users=10", "stop.max_rounds=1",
)  # fmt: skip
ADAM = ("algorithm.use=fedavg_adam", "algorithm.params.lr=0.003")


def upload_bytes(tmp_path, name: str, *sets: str) -> pd.Series:
    """Run the shrunk scenario; return bytes_up of device_rounds.csv's completed updates."""
    run(load_scenario(SCENARIO, [*SMALL, *sets]), tmp_path / name)
    table = pd.read_csv(tmp_path / name / "device_rounds.csv")
    done = table[table["status"] == "completed"]
    assert len(done) == 5
    return done["bytes_up"]


def test_cifar_cnn_upload_bytes_fedavg_adam_and_mtfl(tmp_path):
    # Arrange: the counts from the model itself (weights, biases, BN γ, β, μ, σ²; the BN
    # layers' integer batch counters are not uploaded)
    net = build_model("mtfl_cnn", (3, 32, 32), 10)
    state = net.state_dict()
    floats = sum(v.numel() for v in state.values() if v.is_floating_point())
    weights = sum(p.numel() for p in net.parameters() if p.requires_grad)
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    gamma_beta = sum(m.weight.numel() + m.bias.numel() for m in bn)
    assert gamma_beta == (32 + 64) * 2
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    fedavg = 4 * floats
    adam = fedavg + 2 * 4 * weights + 8  # m and v per weight, a float64 step count
    mtfl = fedavg - 4 * gamma_beta

    # Act
    fl = upload_bytes(tmp_path, "fl")
    fl_adam = upload_bytes(tmp_path, "adam", *ADAM)
    mtfl_fedavg = upload_bytes(tmp_path, "mtfl", "algorithm.params.private=gamma_beta")

    # Assert
    assert fedavg == 4_820_264  # MTFL's CIFAR-10 CNN: 1,205,066 float32 values
    assert (fl == fedavg).all()
    assert (fl_adam == adam).all()
    assert (mtfl_fedavg == mtfl).all()
    assert adam / fedavg == pytest.approx(3.0, rel=0.01)
