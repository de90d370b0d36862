"""Write the JSON Schemas of the topic records, for consumers and producers in other languages.

``python -m schemas.export DIR`` (or ``fraudstream schemas export DIR``) writes one
``<record>.schema.json`` per record type (JSON Schema 2020-12, with ``$schema``, ``$id`` and the topic it
travels on) and ``index.json`` mapping each default topic name to its schema file. Records that
fraudstream *reads* (transactions, labels, retrain requests) are described as it validates them; records
it *writes* (scores, dead letters, alerts, retrain status) as it serialises them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.common import SCHEMA_VERSION
from schemas.dead_letter import DeadLetter
from schemas.drift import DriftAlert
from schemas.labels import FraudLabel
from schemas.retrain import RetrainRequest, RetrainStatus
from schemas.scored import ScoredTransaction
from schemas.transaction import Transaction

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:fraudstream:schema:"


@dataclass(frozen=True)
class TopicRecord:
    model: type[BaseModel]
    topic: str
    """The default topic name (DESIGN.md); deployments may rename topics, never the record types."""
    direction: Literal["validation", "serialization"]


TOPIC_RECORDS: dict[str, TopicRecord] = {
    "transaction": TopicRecord(Transaction, "transactions", "validation"),
    "fraud-label": TopicRecord(FraudLabel, "fraud-labels", "validation"),
    "scored-transaction": TopicRecord(ScoredTransaction, "scored-transactions", "serialization"),
    "dead-letter": TopicRecord(DeadLetter, "transactions-dlq", "serialization"),
    "retrain-request": TopicRecord(RetrainRequest, "retrain-requests", "validation"),
    "retrain-status": TopicRecord(RetrainStatus, "retrain-status", "serialization"),
    "drift-alert": TopicRecord(DriftAlert, "drift-alerts", "serialization"),
}


def schema_id(name: str) -> str:
    return f"{ID_PREFIX}{name}:v{SCHEMA_VERSION}"


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of record type ``name`` (a key of ``TOPIC_RECORDS``)."""
    record = TOPIC_RECORDS[name]
    body = record.model.model_json_schema(mode=record.direction)
    return {"$schema": DIALECT, "$id": schema_id(name), **body, "x-fraudstream-topic": record.topic}


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every record's schema and ``index.json`` into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    index: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "topics": {}}
    for name, record in TOPIC_RECORDS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n")
        written.append(path)
        index["topics"][record.topic] = {"schema": path.name, "$id": schema_id(name)}
    index_path = directory / "index.json"
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    written.append(index_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="where to write the schemas (created if missing)")
    args = parser.parse_args(argv)
    try:
        written = export_json_schemas(args.directory)
    except OSError as exc:
        print(f"error: cannot write to {args.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
