"""Typed records of every fraudstream topic (pydantic v2), with JSON Schemas for other languages."""

from schemas.common import SCHEMA_VERSION, Record
from schemas.dead_letter import DeadLetter, Stage
from schemas.drift import DriftAlert
from schemas.labels import FraudLabel
from schemas.retrain import RetrainRequest, RetrainStatus
from schemas.scored import Decision, Latencies, ReasonCode, ScoredTransaction, ShadowScore, StageTimings
from schemas.transaction import Transaction, transaction_context

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "Decision",
    "DriftAlert",
    "FraudLabel",
    "Latencies",
    "ReasonCode",
    "Record",
    "RetrainRequest",
    "RetrainStatus",
    "ScoredTransaction",
    "ShadowScore",
    "Stage",
    "StageTimings",
    "Transaction",
    "transaction_context",
]
