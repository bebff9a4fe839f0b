"""The Ray runtime keeps to this machine and to stderr (a real local Ray, 2 CPUs).

Every socket a Ray process listens on (GCS, raylet, runtime-env agent, each actor, the
driver's own core worker) is on loopback; a dead actor becomes one plain line, and Ray's
"A worker died" notice does not reach stdout.
"""

import ipaddress
import os
import signal
import time

import pytest
import ray
from helpers import REPO

from fedsim.config import load_scenario
from fedsim.errors import RuntimeFailure
from fedsim.prepare import check, device_partitions, make_runtime

pytestmark = pytest.mark.ray
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


@pytest.fixture(scope="module")
def ray_runtime():
    """A RayRuntime that starts (and owns) its Ray: 2 workers on 2 CPUs."""
    assert not ray.is_initialized(), "another test left Ray running"
    sc = load_scenario(QUICKSTART, ["runtime.kind=ray", "runtime.workers=2"])
    prep = check(sc)
    runtime = make_runtime(prep, device_partitions(prep))
    yield runtime
    runtime.close()
    assert not ray.is_initialized()


def listening_sockets() -> list[tuple[str, str, int]]:
    """Return (process name, address, port) of every listening TCP socket of this tree."""
    import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

    me = psutil.Process(os.getpid())
    out = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except psutil.NoSuchProcess:
            continue
        out += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_ray_process_listens_on_loopback_only(ray_runtime):
    handles = ray_runtime.train(0, 0, [0, 2, 4, 5])
    ray_runtime.aggregate_edge(0, handles)
    ray_runtime.sync_cloud()
    sockets = listening_sockets()
    exposed = [s for s in sockets if not is_loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    # the check saw Ray itself: its servers, both device hosts and the driver
    names = [name for name, _, _ in sockets]
    assert {"gcs_server", "raylet"} <= set(names), sockets
    assert sum(n.startswith("ray::DeviceHost") for n in names) == 2, sockets
    assert any(n.startswith("ray::RuntimeEnv") for n in names), sockets
    assert any(n.startswith("python") for n in names), sockets  # the driver's core worker


def test_dead_host_is_one_plain_line_and_stdout_stays_clean(ray_runtime, capfd):
    pid = ray.get(ray_runtime._hosts[1].__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    devices = [d for d in range(30) if d % 2 == 1]  # host 1's devices
    ray_runtime.aggregate_edge(0, ray_runtime.train(0, 1, devices))
    with pytest.raises(RuntimeFailure) as err:
        ray_runtime.sync_cloud()
    text = str(err.value)
    assert "device host 1 training 15 devices in round 1" in text
    assert "\x1b[" not in text and "\n" not in text
    assert "[1, 3, 5" not in text
    time.sleep(2)  # Ray publishes the worker's death asynchronously
    assert "A worker died" not in capfd.readouterr().out
