"""``open_backend``: a ``ModelBackend`` from a ``model_backend`` URI (see scoring/uri.py)."""

from __future__ import annotations

from scoring.backend import ModelBackend
from scoring.uri import parse_backend_uri


def open_backend(
    uri: str,
    *,
    expected_feature_hash: str | None,
    deadline_s: float = 1.0,
    poll_interval_s: float = 2.0,
    retries: int = 2,
) -> ModelBackend:
    """Build (not start) the backend ``uri`` names; call ``await backend.start()`` before scoring.

    ``start()`` raises ``FeatureHashMismatch`` when the model's feature list differs from
    ``expected_feature_hash``.
    """
    spec = parse_backend_uri(uri)
    if spec.kind == "local":
        from scoring.local import LocalBackend

        assert spec.path is not None
        return LocalBackend(spec.path, expected_feature_hash=expected_feature_hash, poll_interval_s=poll_interval_s)
    from scoring.tfserving import TFServingBackend

    assert spec.target is not None
    return TFServingBackend(
        spec.target,
        spec.model_name,
        expected_feature_hash=expected_feature_hash,
        label=spec.label,
        version=spec.version,
        signature=spec.signature,
        deadline_s=spec.deadline_s or deadline_s,
        retries=retries,
    )
