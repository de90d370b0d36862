"""The feature platform: one set of definitions, an online engine (Redis) and an offline one (numpy).

Public API (stable names; the stream worker and the trainer import these):

- ``FEATURE_LIST``: the ordered, hashed feature list (``.name``, ``.names``, ``.hash``, ``len()``).
- ``RedisFeatureStore(redis_client, *, key_prefix="fs", ...)``: the ``OnlineFeatureStore``.
- ``compute_offline(transactions, labels=None)``: the same vectors for a whole history.
- ``load_fdh(path, limit=None)``: the fdh data set as (transactions, labels) frames.
"""

from __future__ import annotations

from features.definitions import FEATURE_LIST, FeatureList
from features.errors import FeatureError, FeatureScriptError, FeatureStoreUnavailable
from features.events import LabelEvent, TransactionEvent
from features.history import load_fdh
from features.offline import compute_offline
from features.online import RedisFeatureStore
from features.store import OnlineFeatureStore

__all__ = [
    "FEATURE_LIST",
    "FeatureError",
    "FeatureList",
    "FeatureScriptError",
    "FeatureStoreUnavailable",
    "LabelEvent",
    "OnlineFeatureStore",
    "RedisFeatureStore",
    "TransactionEvent",
    "compute_offline",
    "load_fdh",
]
