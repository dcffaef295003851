"""Replica CPU sampled on the replicas' own nodes, by a Ray actor pinned to each, not by the process that measures."""

from __future__ import annotations

import os
import socket

import pytest

from serving.client import InferopsClient
from tasks.measure.replica_nodes import replica_nodes, sampled_on_replica_nodes
from tasks.measure.suites import model_target, run_load
from tasks.measure.system_metrics import RAY_REPLICA_MARKER, replica_pids
from tasks.optimize.serving_search import ServingConfig, node_usage, trial_app
from tasks.policy import default_policy


@pytest.mark.usefixtures("ray_session")
def test_a_sampler_on_each_replica_node_measures_the_replicas_under_load() -> None:
    policy = default_policy()
    config = ServingConfig(replicas=2, threads=1, max_batch=4, wait_ms=1.0)
    with trial_app("digits-cnn", None, config, policy, name="trial-sampled") as (url, key):
        with InferopsClient(url, key) as client:
            name = client.models()[0]
            meta = client.check_serves(name)
        spec = model_target(url, name, key, meta)
        with sampled_on_replica_nodes("trial-sampled", interval_s=0.25) as usage:
            run_load(spec, policy=policy, rate=40.0, duration_s=4.0)
        here = replica_pids(f"{RAY_REPLICA_MARKER}:trial-sampled:")
        nodes = replica_nodes("trial-sampled")
    assert usage.errors == []
    assert set(usage.summaries) == set(nodes) and sum(nodes.values()) == 2
    # the sampler ran in a process of its own on the replicas' node (this host here), and found what a scan of
    # this host finds
    assert set(usage.hosts.values()) == {socket.gethostname()}
    assert os.getpid() not in usage.sampler_pids.values()
    assert usage.processes == len(here) >= 2
    mean, peak = usage.cpu_percent()
    assert 0 < mean <= peak
    figures = node_usage(usage, config)
    assert figures["replica_nodes"] == len(nodes) and figures["replica_processes"] == len(here)
    assert figures["replica_cpu_share_max"] == pytest.approx(peak / 200.0)


@pytest.mark.usefixtures("ray_session")
def test_an_app_with_no_replica_is_not_sampled_and_says_why() -> None:
    with sampled_on_replica_nodes("no-such-app") as usage:
        pass
    assert usage.summaries == {} and usage.errors == ["no running replica of no-such-app on the cluster"]
    assert node_usage(usage, ServingConfig(1, 1, 1, 1.0)) == {}
