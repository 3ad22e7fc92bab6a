"""Joining a running Ray cluster, or starting an embedded local one on 127.0.0.1."""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    embedded: bool  # True when this process started a local Ray (and should shut it down)
    num_cpus: float
    num_gpus: float


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_memory: int | None = None) -> ClusterInfo:
    """Join ``address`` (or the cluster this process runs in: inside ``ray job submit``, or
    ``RAY_ADDRESS``), else start an embedded local Ray bound to 127.0.0.1 with the dashboard off."""
    embedded = False
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            ray.init(address=target, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                     _node_ip_address="127.0.0.1", object_store_memory=object_store_memory,
                     log_to_driver=True)
            embedded = True
    res = ray.cluster_resources()
    ctx = ray.get_runtime_context()
    return ClusterInfo(address=str(ctx.gcs_address), embedded=embedded, num_cpus=float(res.get("CPU", 0)),
                       num_gpus=float(res.get("GPU", 0)))
