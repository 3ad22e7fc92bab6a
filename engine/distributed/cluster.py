"""Joining a running Ray cluster, or starting an embedded local one on loopback only."""
from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager
from dataclasses import dataclass

import ray

#: Ray's switch for its local-only mode (the default on macOS and Windows): with it at "0" the node
#: IP stays 127.0.0.1 and every Ray server (GCS, raylet, workers, agents, metrics) binds loopback.
#: Without it, Ray 2.59 on Linux rewrites a node IP of 127.0.0.1 to the host's address.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    embedded: bool  # True when this process started a local Ray (and should shut it down)
    num_cpus: float
    num_gpus: float


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


@contextmanager
def _ray_local_only():
    """Ray's local-only mode while a node starts: its child processes read LOCAL_ONLY_ENV when they
    import ray; this process imported ray already, so its copy of the flag is switched too."""
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(LOCAL_ONLY_ENV, None)
        else:
            os.environ[LOCAL_ONLY_ENV] = old_env


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_memory: int | None = None) -> ClusterInfo:
    """Join ``address`` (or the cluster this process runs in: inside ``ray job submit``, or
    ``RAY_ADDRESS``), else start an embedded local Ray that listens on loopback only, dashboard off."""
    embedded = False
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            ray.init(address=target, log_to_driver=True)
        else:
            with _ray_local_only():
                ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                         _node_ip_address="127.0.0.1", object_store_memory=object_store_memory,
                         log_to_driver=True)
            embedded = True
            node_ip = ray.util.get_node_ip_address()
            if not is_loopback(node_ip):  # fail closed should a Ray upgrade drop the local-only mode
                stop_ray()
                raise RuntimeError(f"the embedded Ray came up on {node_ip}, not on loopback: stopped it rather "
                                   "than run it exposed (give a cluster address instead)")
    res = ray.cluster_resources()
    ctx = ray.get_runtime_context()
    return ClusterInfo(address=str(ctx.gcs_address), embedded=embedded, num_cpus=float(res.get("CPU", 0)),
                       num_gpus=float(res.get("GPU", 0)))


def stop_ray() -> None:
    """``ray.shutdown()``: disconnects from a joined cluster; stops a Ray this process started, a
    second sooner. Ray 2.59 stops its head processes one by one, the autoscaler monitor after the
    GCS: the monitor's SIGTERM handler then tries to report to the gone GCS until Ray kills it a
    second later (1.4 s to shut down in all, 0.4 s without that). So the monitor this process
    started, if any, is killed first, by the pid of Ray's own handle on it (Ray's node records
    only the processes this process started)."""
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        monitors = [] if node is None else node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
    except (ImportError, AttributeError):  # another Ray version: its plain shutdown
        monitors = []
    for info in monitors:
        if info.process.poll() is None:
            info.process.kill()
            info.process.wait(timeout=10)
    ray.shutdown()
