"""Exports tiny real fraud DNNs in the model-repository layout (see ``scoring/testing/model_factory.py``,
where the exporter lives so the benchmark command can use it too)."""

from scoring.testing.model_factory import (
    DEFAULT_FEATURES,
    PLANTED_FEATURE,
    export_model,
    feature_list_hash,
    sample_features,
    write_labels,
)

__all__ = [
    "DEFAULT_FEATURES",
    "PLANTED_FEATURE",
    "export_model",
    "feature_list_hash",
    "sample_features",
    "write_labels",
]
