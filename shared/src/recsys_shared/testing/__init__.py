"""Test tooling shared by every suite, and by the benchmarks that start whole systems.

Not part of the services' runtime: left out of the wheel the images install (with
``processes`` and ``redis_cluster``, see shared/pyproject.toml), its dependencies in the
``testing`` extra; the workspace's editable install, which tests, benchmarks and ``make run``
use, has both.
``fixtures`` holds the pytest fixtures (registered by the root ``conftest.py``), ``tiers`` the
Redis deployments a test runs on (one node, or a local cluster with a broker beside it),
``stack`` the whole system as real processes, ``api`` driving it through the gateway (keys,
data in, a model trained, waiting on tasks), ``data`` the synthetic data sets, ``records``
registry records of models never trained, ``answers`` the checks of an answer (200 or problem),
``waiting`` polling and background tasks, ``scripts`` the repository's check scripts run,
``documents`` walking a parsed JSON or YAML document.
"""

from __future__ import annotations

from recsys_shared.testing.answers import assert_problem, ok_body
from recsys_shared.testing.api import (
    ADMIN_KEY,
    API_KEYS,
    CLIENT_KEY,
    admin_headers,
    client_headers,
    load,
    recommendations,
    retrain,
    send_events,
    train,
    wait_for_applied,
    wait_for_task,
)
from recsys_shared.testing.data import taste_clusters, view_batch
from recsys_shared.testing.records import model_info
from recsys_shared.testing.stack import (
    SERVICES,
    Stack,
    build_stack,
    interrupt_on_sigterm,
    own_stack,
    start_all,
)
from recsys_shared.testing.tiers import DataTier, cluster_tier, single_tier
from recsys_shared.testing.waiting import eventually, in_background

__all__ = [
    "ADMIN_KEY",
    "API_KEYS",
    "CLIENT_KEY",
    "SERVICES",
    "DataTier",
    "Stack",
    "admin_headers",
    "assert_problem",
    "build_stack",
    "client_headers",
    "cluster_tier",
    "eventually",
    "in_background",
    "interrupt_on_sigterm",
    "load",
    "model_info",
    "ok_body",
    "own_stack",
    "recommendations",
    "retrain",
    "send_events",
    "single_tier",
    "start_all",
    "taste_clusters",
    "train",
    "view_batch",
    "wait_for_applied",
    "wait_for_task",
]
