"""Starting Ray for fedsim: sockets on loopback only, no Ray notices on stdout, plain errors.

Three things Ray 2.60 does not do by itself (docs/ray.md):

- ``ray.init(_node_ip_address="127.0.0.1")`` alone does not keep Ray on this machine:
  ``ray.init`` swaps a loopback node address for the machine's external one
  (``services.resolve_ip_for_localhost``) unless Ray runs as a single-machine install
  (``ray_constants.ENABLE_RAY_CLUSTER`` false: the default on macOS and Windows, the
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch elsewhere, read once when ``ray`` is
  imported). With the external address the GCS, the raylet, every core worker (actors and
  the driver) listen on all interfaces (Ray binds 127.0.0.1 only when the node address is
  exactly ``127.0.0.1``) and the runtime-env agent on the external address. Treating the
  start as single-machine keeps ``127.0.0.1``, and every one of them listens on loopback.
- A driver runs a thread that prints every error the cluster publishes ("(raylet) A worker
  died or was killed ...") to stdout, whatever ``log_to_driver`` says; it is stopped.
  fedsim reports the failure itself (one line on stderr); Ray's notices stay in its logs.
- Ray's error texts carry ANSI colour codes and span lines; :func:`one_line` flattens them.

The first two reach into ``ray._private``: after a Ray upgrade, run
``tests/runtime/test_runtime_ray_network.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from fedsim.config import RuntimeSpec

LOOPBACK = "127.0.0.1"

#: An ANSI escape sequence (colours, cursor moves).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def start_ray(spec: RuntimeSpec) -> None:
    """Start a local Ray closed to the network, or join the cluster at ``spec.address``.

    A local Ray gets ``spec.workers`` CPUs, and each process it starts (GCS, raylet, the
    runtime-env agent, the actors, the driver's own core worker, the dashboard if asked)
    listens on 127.0.0.1 only. Joining a cluster uses the cluster's addresses.
    """
    if spec.address:
        ray.init(address=spec.address, include_dashboard=spec.dashboard, log_to_driver=False)
    else:
        with _single_machine():
            ray.init(
                num_cpus=spec.workers,
                include_dashboard=spec.dashboard,
                dashboard_host=LOOPBACK,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                configure_logging=False,
            )
    _stop_error_printer()


@contextmanager
def _single_machine() -> Iterator[None]:
    """Let ``ray.init`` keep a loopback node address (see the module's docstring)."""
    from ray._private import ray_constants

    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if before is None:  # another Ray: nothing to switch (the socket test tells)
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _stop_error_printer() -> None:
    """Stop the driver thread that prints the cluster's error notices to stdout.

    The thread exits when its subscriber is closed and the stop event set; ``ray.shutdown``
    later finds it finished (closing the subscriber twice is harmless).
    """
    worker = ray._private.worker.global_worker
    thread = getattr(worker, "listener_thread", None)
    subscriber = getattr(worker, "gcs_error_subscriber", None)
    if thread is None or subscriber is None:
        return
    worker.threads_stopped.set()
    subscriber.close()
    thread.join(timeout=10.0)
    if not thread.is_alive():
        worker.threads_stopped.clear()


def one_line(text: str) -> str:
    """Return ``text`` without ANSI escape codes, its whitespace runs as single spaces."""
    return " ".join(ANSI_ESCAPE.sub("", text).split())


def ray_reason(text: str) -> str:
    """Return the gist of a Ray error: its innermost exception's name and first sentence.

    Ray's messages repeat the task's repr, ids and advice over several lines; the run's
    message names what was lost itself, and needs only why.
    """
    flat = one_line(text)
    found = re.findall(r"ray\.exceptions\.(\w+): ([^.]*\.)", flat)
    if found:
        name, sentence = found[-1]
        return f"{name}: {sentence.strip()}"
    return flat if len(flat) <= 200 else flat[:200] + " ..."


def dashboard_missing() -> str | None:
    """Return why Ray's dashboard cannot start here (missing packages), or None if it can.

    Ray imports the same module before starting the dashboard; ``ray`` alone lacks them,
    ``ray[default]`` has them.
    """
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None
