"""Fixtures shared by every test folder."""

import pytest
from helpers import shared_data_dir


@pytest.fixture
def mnist_env(monkeypatch):
    """Point ``FEDSIM_DATA`` at the shared data folder; skip the test without MNIST there."""
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    monkeypatch.setenv("FEDSIM_DATA", str(data))
