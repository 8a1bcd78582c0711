"""The cluster options and limits a hub's gateway gives each user (pure: no processes)."""

from __future__ import annotations

import pytest
from dask_gateway_server.backends.local import LocalClusterConfig
from dask_gateway_server.models import User

from hubfleet.research.gateway import cluster_options, limits_for
from hubfleet.spec.models import Dask, DaskLimits

GIB = 1024**3
DASK = Dask(
    worker_memory=GIB // 2,
    max_worker_memory=2 * GIB,
    limits=DaskLimits(max_cores=2, max_memory=GIB, max_clusters=1),
    group_limits={"power": DaskLimits(max_cores=8, max_memory=16 * GIB, max_clusters=3)},
)


def _config(user: User, request: dict) -> LocalClusterConfig:
    options = cluster_options(DASK)(user)
    overrides = options.get_configuration(options.parse_options(request), user)
    return LocalClusterConfig(**overrides)


def test_a_user_with_little_memory_can_still_start_a_cluster() -> None:
    config = _config(User("ann", groups=[]), {})
    assert config.scheduler_memory == 512 * 1024**2
    assert config.cluster_max_memory == GIB and config.cluster_max_cores == 2
    assert config.cluster_max_workers == 1  # (2 cores - 1 for the scheduler) // 1 core per worker


def test_group_limits_apply_and_worker_size_is_bounded() -> None:
    config = _config(User("bea", groups=["power"]), {"worker_cores": 2, "worker_memory": 2})
    assert config.cluster_max_cores == 8 and config.worker_cores == 2 and config.worker_memory == 2 * GIB
    assert limits_for(DASK, ["power", "other"]).max_clusters == 3
    with pytest.raises(ValueError, match="worker_cores"):
        _config(User("bea", groups=["power"]), {"worker_cores": 5})
