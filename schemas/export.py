"""Write the JSON Schemas of the topic records, for consumers in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.dead_letter import DeadLetter
from schemas.drift import DriftAlert
from schemas.labels import FraudLabel
from schemas.retrain import RetrainRequest, RetrainStatus
from schemas.scored import ScoredTransaction
from schemas.transaction import Transaction

TOPIC_RECORDS: dict[str, type[BaseModel]] = {
    "transaction": Transaction,
    "fraud-label": FraudLabel,
    "scored-transaction": ScoredTransaction,
    "dead-letter": DeadLetter,
    "retrain-request": RetrainRequest,
    "retrain-status": RetrainStatus,
    "drift-alert": DriftAlert,
}


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in TOPIC_RECORDS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
