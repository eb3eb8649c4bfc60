"""Flower tests: offline, quiet, one Simulation Engine start for every simulated federation of the session."""

from __future__ import annotations

import os

# Before flwr / ray are imported: no telemetry or usage reports from an offline test machine, no metrics agent.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_enable_metrics_collection", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import pytest


@pytest.fixture(scope="session")
def simulated(request):
    """name → FlowerFederation after one ``run_simulations`` over all of them (see flower_fixtures.flower_jobs)."""
    from hf_trust.trainers.federated.flower import run_simulations
    from tests.flower.flower_fixtures import flower_jobs

    jobs = flower_jobs()
    before = os.environ.get("PYTHONPATH")
    run_simulations([(fed, parts) for fed, parts in jobs.values()], raise_errors=False)
    request.config.hf_trust_pythonpath_around_simulation = (before, os.environ.get("PYTHONPATH"))
    return {name: fed for name, (fed, _) in jobs.items()}
