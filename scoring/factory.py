"""``open_backend``: a ``ModelBackend`` from the model connection (``settings.model``, config/model.py)."""

from __future__ import annotations

from config.model import ModelConnection
from scoring.backend import ModelBackend


def open_backend(
    connection: ModelConnection | str,
    *,
    expected_feature_hash: str | None,
    poll_interval_s: float = 2.0,
) -> ModelBackend:
    """Build (not start) the backend the connection's URI names (a bare URI: the default deadline and retry
    policy); call ``await backend.start()`` before scoring.

    ``start()`` raises ``FeatureHashMismatch`` when the model's feature list differs from
    ``expected_feature_hash``.
    """
    if isinstance(connection, str):
        connection = ModelConnection(backend=connection)
    spec = connection.spec
    if spec.kind == "local":
        from scoring.local import LocalBackend

        assert spec.path is not None
        return LocalBackend(spec.path, expected_feature_hash=expected_feature_hash, poll_interval_s=poll_interval_s)
    from scoring.tfserving import TFServingBackend

    return TFServingBackend(connection, expected_feature_hash=expected_feature_hash)
