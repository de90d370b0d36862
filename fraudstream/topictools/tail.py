"""Read a topic's records as JSON lines (``fraudstream tail``), for people and scripts.

Each line is one record: ``topic``, ``partition``, ``offset``, ``timestamp`` (ISO 8601, UTC) and
``timestamp_ms``, ``key`` and ``value``. A value that is JSON is embedded as JSON (``value_format: "json"``);
other UTF-8 text as a string (``"text"``); anything else as base64 (``"base64"``), so binary records are
shown byte for byte. Card numbers are masked the way dead letters mask them (the ``card_id`` field and any
Luhn-valid 13-19 digit run): a terminal is no place for a PAN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from config.kafka import KafkaConnection, as_connection
from fraudstream.topictools.errors import TopicNotFound
from schemas.codec import REDACTED, redact_card_numbers

REDACTED_TEXT = REDACTED.decode().strip('"')

ValueFormat = Literal["json", "text", "base64", "null"]


@dataclass(frozen=True)
class TailOptions:
    topic: str
    from_beginning: bool = False
    max_records: int | None = None
    to_end: bool = False
    """Stop at the end offsets the topic had when the tail started (read what is there, then exit)."""
    mask_card_numbers: bool = True


def _bytes_field(raw: bytes | None, *, parse_json: bool, mask: bool) -> tuple[Any, ValueFormat]:
    if raw is None:
        return None, "null"
    if parse_json:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            return (mask_json(parsed) if mask else parsed), "json"
    if mask:
        raw = redact_card_numbers(raw)
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def mask_json(value: Any, key: str | None = None) -> Any:
    """Card numbers masked in a parsed JSON value: the ``card_id`` field whatever its value, Luhn-valid
    13-19 digit runs inside strings, and integers that are such runs. Other numbers are left alone (masking
    the raw bytes would also hit a score's 16 decimals, and break the JSON)."""
    if key == "card_id" and value is not None:
        return REDACTED_TEXT
    if isinstance(value, dict):
        return {k: mask_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, str):
        return redact_card_numbers(value.encode()).decode("utf-8", errors="replace")
    if isinstance(value, int) and not isinstance(value, bool) and 13 <= len(str(abs(value))) <= 19:
        masked = redact_card_numbers(str(value).encode()).decode()
        return masked if "#" in masked else value
    return value


def record_as_json(message: ConsumerRecord[bytes, bytes], *, mask_card_numbers: bool = True) -> dict[str, Any]:
    """One consumed record as a JSON-ready dict (see the module's docstring)."""
    raw_key = message.key
    if mask_card_numbers and raw_key is not None and _is_card_id_of(raw_key, message.value):
        raw_key = REDACTED_TEXT.encode()  # keyed by its card: the key is the card number the value masks
    key, key_format = _bytes_field(raw_key, parse_json=False, mask=mask_card_numbers)
    value, value_format = _bytes_field(message.value, parse_json=True, mask=mask_card_numbers)
    line: dict[str, Any] = {
        "topic": message.topic, "partition": message.partition, "offset": message.offset,
        "timestamp": datetime.fromtimestamp(message.timestamp / 1000, UTC).isoformat(timespec="milliseconds"),
        "timestamp_ms": message.timestamp, "key": key, "key_format": key_format,
        "value": value, "value_format": value_format,
    }
    if message.headers:
        line["headers"] = [[name, _bytes_field(raw, parse_json=False, mask=mask_card_numbers)[0]]
                           for name, raw in message.headers]
    return line


def _is_card_id_of(key: bytes, value: bytes | None) -> bool:
    if not value or b"card_id" not in value:
        return False
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and str(record.get("card_id")).encode() == key


async def assign_partitions(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *,
                            from_beginning: bool) -> dict[TopicPartition, int]:
    """Assign ``partitions``, positioned at the beginning or the end; returns the end offsets as they are
    now."""
    parts = sorted(partitions)
    consumer.assign(parts)
    if from_beginning:
        await consumer.seek_to_beginning(*parts)
    else:
        await consumer.seek_to_end(*parts)
    for tp in parts:  # materialise the positions now: "from the end" means from when the command started
        await consumer.position(tp)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(parts)
    return ends


async def topic_partitions(kafka: KafkaConnection | str, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``; ``TopicNotFound`` (listing the topics there are) if it does not exist."""
    admin = as_connection(kafka).admin()
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        parts = [TopicPartition(topic, p["partition"]) for t in described if t["topic"] == topic
                 and not t["error_code"] for p in t["partitions"]]
        if not parts:
            existing = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
            raise TopicNotFound(topic, existing)
        return parts
    finally:
        await admin.close()


async def tail(kafka: KafkaConnection | str, options: TailOptions, emit: Callable[[dict[str, Any]], None],
               *, stop: asyncio.Event | None = None) -> int:
    """Emit records of ``options.topic`` until ``stop`` is set, ``max_records`` were emitted or (with
    ``to_end``) the end offsets of the start were reached; returns how many were emitted."""
    stop = stop or asyncio.Event()
    partitions = await topic_partitions(kafka, options.topic)
    consumer = as_connection(kafka).consumer(enable_auto_commit=False)
    await consumer.start()
    emitted = 0
    try:
        ends = await assign_partitions(consumer, partitions, from_beginning=options.from_beginning)
        remaining = {tp: end for tp, end in ends.items() if await consumer.position(tp) < end}
        while not stop.is_set():
            if options.to_end and not remaining:
                break
            limit = None if options.max_records is None else options.max_records - emitted
            batches = await consumer.getmany(timeout_ms=200, max_records=min(limit or 1000, 1000))
            for tp, messages in sorted(batches.items()):
                for message in messages:
                    if options.to_end and message.offset >= ends.get(tp, 0):
                        continue
                    emit(record_as_json(message, mask_card_numbers=options.mask_card_numbers))
                    emitted += 1
                if options.to_end and tp in remaining and await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
            if options.max_records is not None and emitted >= options.max_records:
                break
    finally:
        await consumer.stop()
    return emitted


def run_until_signalled(coroutine_factory: Callable[[asyncio.Event], Any]) -> Any:
    """Run ``coroutine_factory(stop)`` with SIGINT/SIGTERM setting ``stop``: Ctrl-C ends the read loop
    and the consumer is closed properly, no traceback."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await coroutine_factory(stop)

    return asyncio.run(main())


def dumps_line(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode()
