"""A sustained-drift alert on ``drift-alerts``."""

from __future__ import annotations

from datetime import datetime

from schemas.common import Record


class DriftAlert(Record):
    alert_id: str
    subject: str
    """``score`` or a feature name."""
    window: str
    psi: float
    ks: float
    threshold: float
    model_version: int | None
    at: datetime
