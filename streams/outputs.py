"""The records the pipeline publishes: scored transactions (and the stored result a repeat gets again) and
dead letters. Built as dicts and encoded with orjson: constructing and dumping a pydantic model per record
costs more than the rest of the record's path; the contract tests parse these bytes back with
``ScoredTransaction`` and ``DeadLetter``."""

from __future__ import annotations

from typing import Any

import orjson

from features.ids import ClaimResult
from schemas import SCHEMA_VERSION, Transaction
from schemas.codec import Rejection, dead_letter, encode, readable_ids
from schemas.dead_letter import FirstOccurrence
from streams.identity import CardHasher
from streams.messages import InboundMessage, OutboundMessage
from streams.scorer import ScoreResult


def result_fields(result: ScoreResult, feature_list_hash: str) -> dict[str, Any]:
    """The fields of a scored record that scoring decided: what a repeat of the transaction gets again."""
    shadow = result.shadow
    return {
        "score": float(result.score), "decision": result.decision,
        "reason_codes": [
            {"code": r.code, "feature": r.feature, "contribution": float(r.contribution)} for r in result.reason_codes
        ],
        "rules_fired": list(result.rules_fired), "model_name": result.model_name,
        "model_version": result.model_version, "model_label": result.model_label,
        "degraded": bool(result.degraded),
        "shadow": None if shadow is None else {"model_version": shadow.model_version, "score": shadow.score},
        "feature_list_hash": feature_list_hash,
    }


_RESULT_KEYS = ("score", "decision", "reason_codes", "rules_fired", "model_name", "model_version", "model_label",
                "degraded", "shadow", "feature_list_hash")


def encode_result(fields: dict[str, Any]) -> bytes:
    """The result as Redis keeps it for repeats: positional, reason codes as [code, feature, contribution]
    (key names were a third of its bytes, and Redis holds one per transaction for the whole horizon)."""
    row = [fields[k] for k in _RESULT_KEYS]
    row[2] = [[r["code"], r["feature"], r["contribution"]] for r in fields["reason_codes"]]
    return orjson.dumps(row)


def decode_result(stored: bytes) -> dict[str, Any]:
    """``encode_result`` read back: the fields of the first published result, in their published order."""
    fields = dict(zip(_RESULT_KEYS, orjson.loads(stored), strict=True))
    fields["reason_codes"] = [{"code": c, "feature": f, "contribution": x} for c, f, x in fields["reason_codes"]]
    return fields


def scored_json(tx: Transaction, card_ref: str, fields: dict[str, Any], common: dict[str, object],
                timings: dict[str, float] | None = None) -> bytes:
    """One ``ScoredTransaction``: the transaction's own fields, the scoring result, this delivery's
    latencies, stage timings and time. orjson writes the (UTC) event time itself, without a Python call per
    record."""
    record = {
        "schema_version": SCHEMA_VERSION, "transaction_id": tx.transaction_id, "card_ref": card_ref,
        "terminal_id": tx.terminal_id, "amount": tx.amount, "currency": tx.currency,
        "event_time": tx.event_time, **fields, **common,
    }
    if timings is not None:  # left out, not null, when switched off: a reader of the older schema accepts it
        record["timings"] = timings
    return orjson.dumps(record, option=orjson.OPT_UTC_Z)


def dead_letter_message(
    message: InboundMessage, rejection: Rejection, hasher: CardHasher, topic: str
) -> OutboundMessage:
    """A rejected message's dead letter, with its transaction id and card reference when readable."""
    transaction_id, card_id = readable_ids(message.value)
    record = dead_letter(
        rejection, message.value, topic=message.topic, partition=message.partition, offset=message.offset,
        transaction_id=transaction_id, card_ref=None if card_id is None else hasher.reference(card_id),
    )
    return OutboundMessage(topic, _key(message), encode(record))


def conflict_message(
    message: InboundMessage, tx: Transaction, card_ref: str, content_hash: str, claimed: ClaimResult, topic: str
) -> OutboundMessage:
    """The dead letter of a record whose id belongs to other content: both fingerprints, and where the
    first (scored) record was read."""
    first = claimed.first
    assert first is not None
    rejection = Rejection(
        "validate", "duplicate:transaction_id:conflict",
        f"transaction id already used by other content (content {first.content_hash}, read at "
        f"{first.topic}[{first.partition}]@{first.offset}, was scored); this record's content is "
        f"{content_hash}: not scored",
    )
    record = dead_letter(
        rejection, message.value, topic=message.topic, partition=message.partition, offset=message.offset,
        transaction_id=tx.transaction_id, card_ref=card_ref, content_hash=content_hash,
        conflicts_with=FirstOccurrence(content_hash=first.content_hash, topic=first.topic,
                                       partition=first.partition, offset=first.offset),
    )
    return OutboundMessage(topic, _key(message), encode(record))


def _key(message: InboundMessage) -> bytes:
    # The DLQ is keyed by topic/partition, never by the (clear) card id the raw message may hold.
    return f"{message.topic}:{message.partition}".encode()
