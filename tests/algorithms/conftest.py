"""The algorithms' Ray tests share one local Ray (each starts its own actors)."""

import helpers
import pytest


@pytest.fixture(scope="package", autouse=True)
def shared_ray():
    """Let :func:`helpers.run_on_ray` keep Ray up within this folder; shut it down after."""
    helpers.KEEP_RAY = True
    yield
    helpers.KEEP_RAY = False
    import ray

    if ray.is_initialized():
        ray.shutdown()
