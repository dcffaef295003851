"""One way into MLflow: the tracking URI from settings and experiments whose artifacts live in the data dir."""

from __future__ import annotations

import logging
import os

import mlflow

from serving.settings import get_settings
from tasks.records.names import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

for _noisy in ("mlflow.store.db.utils", "mlflow.tracking.fluent", "alembic.runtime.migration"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def configure() -> str:
    """Point MLflow at the configured store (embedded SQLite by default) and return its URI."""
    uri = get_settings().resolved_tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Create (once) and select an experiment; with the embedded store its artifacts go to the data dir."""
    uri = configure()
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:"):
            location = (get_settings().artifacts_dir / name).resolve().as_uri()
        experiment_id = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # experiments made before inferops set the kind
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
