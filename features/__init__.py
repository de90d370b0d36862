"""The feature platform: one set of definitions, an online engine (Redis) and an offline one (numpy)."""

from __future__ import annotations

from features.definitions import FEATURE_LIST, FeatureList
from features.events import LabelEvent, TransactionEvent
from features.online import RedisFeatureStore
from features.store import OnlineFeatureStore

__all__ = [
    "FEATURE_LIST",
    "FeatureList",
    "LabelEvent",
    "OnlineFeatureStore",
    "RedisFeatureStore",
    "TransactionEvent",
]
