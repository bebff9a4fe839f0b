"""Fixtures shared by every test folder."""

import helpers
import pytest
from helpers import shared_data_dir


def pytest_runtest_teardown(item, nextitem):  # type: ignore[no-untyped-def]
    """Shut down the Ray that :func:`helpers.run_on_ray` kept, once its folder's tests end."""
    if helpers.RAY_KEPT and (nextitem is None or nextitem.path.parent != item.path.parent):
        import ray

        if ray.is_initialized():
            ray.shutdown()
        helpers.RAY_KEPT = False


@pytest.fixture
def mnist_env(monkeypatch):
    """Point ``FEDSIM_DATA`` at the shared data folder; skip the test without MNIST there."""
    data = shared_data_dir()
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    monkeypatch.setenv("FEDSIM_DATA", str(data))
