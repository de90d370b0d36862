"""Property: whatever field, key, header, separator or encoding a card number arrives in, it never leaves the
worker in clear — no output topic (values, keys, headers, dead letters' decoded originals), no Redis key or
value, no log line. Thousands of hypothesis-generated records through a real worker and Redis.

Each record carries a card number in one to three places: ``transaction_id``, ``terminal_id``,
``currency``, ``event_time``, ``card_id`` (where it is allowed, and hashed), an unknown field's value or
name, a nested value, the Kafka key, a Kafka header; written plain, with single spaces or dashes anywhere,
as JSON ``\\uXXXX`` escapes, or in full-width digits. A quarter carry one only where it is allowed (card_id,
key, header), so the worker also scores and builds state. The search afterwards reads every output through
the same lenses (base64, JSON escapes, Unicode digits, separators dropped)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudstream.stack import LocalStack
from schemas.pan import luhn_valid
from tests.fixtures.history import iso, redis_contents
from tests.fixtures.topics import PARTITIONS, private_topics, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

RECORDS = 3_000
NETWORKS = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2720", 16), ("34", 15), ("37", 15), ("6011", 16),
            ("65", 19), ("36", 14), ("3528", 16), ("62", 17), ("2200", 16), ("6759", 18)]
PLACES = ["transaction_id", "terminal_id", "currency", "event_time", "card_id", "extra_value", "extra_key",
          "nested", "kafka_key", "header"]
ALLOWED = {"card_id", "kafka_key", "header"}
ENCODINGS = ["plain", "escaped", "fullwidth"]
START = 1_772_000_000.0


def pan_of(prefix: str, length: int, digits: str) -> str:
    body = (prefix + digits)[: length - 1].ljust(length - 1, "7")
    return next(body + c for c in "0123456789" if luhn_valid(body + c))


def written(pan: str, separator: str, cuts: list[int], encoding: str) -> str:
    """``pan`` as a sender might write it; ``escaped`` marks digits for JSON \\u escapes (done at dump)."""
    text = "".join(d + (separator if i in cuts else "") for i, d in enumerate(pan[:-1])) + pan[-1]
    if encoding == "fullwidth":
        return "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in text)
    if encoding == "escaped":
        return "".join(f"\x00{c}" if c.isdigit() else c for c in text)  # \x00 marks "escape this digit"
    return text


def dump(record: dict[str, Any]) -> bytes:
    raw = json.dumps(record, ensure_ascii=False)  # writes the \x00 marks as \u0000
    raw = re.sub(r"\\u0000([0-9])", lambda m: f"\\u{ord(m.group(1)):04x}", raw)
    return raw.encode()


@st.composite
def hostile(draw: st.DrawFn, run: str, index: int) -> dict[str, Any]:
    places = draw(st.lists(st.sampled_from(PLACES), min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 3)) == 0:
        places = [p for p in places if p in ALLOWED] or ["kafka_key"]
    pans: list[str] = []
    record: dict[str, Any] = {
        "transaction_id": f"{run}-{index}", "card_id": f"{run}-card-{index % 97}",
        "terminal_id": f"{run}-T{index % 31}", "amount": float(draw(st.integers(0, 50_000))) / 100,
        "currency": "EUR", "event_time": iso(START + index),
    }
    key: bytes = record["card_id"].encode()
    headers: list[tuple[str, bytes]] = []
    for place in places:
        prefix, length = draw(st.sampled_from(NETWORKS))
        rng = draw(st.randoms(use_true_random=False))
        pan = pan_of(prefix, length, "".join(rng.choice("0123456789") for _ in range(18)))
        pans.append(pan)
        separator = draw(st.sampled_from(["", " ", "-"]))
        cuts = draw(st.lists(st.integers(0, length - 2), max_size=4)) if separator else []
        encoding = draw(st.sampled_from(ENCODINGS))
        text = written(pan, separator, cuts, encoding)
        around = draw(st.sampled_from(["{}", "ref {} end", "x{}y", "{}/2026", "card: {}"]))
        if place in ("transaction_id", "terminal_id", "currency", "event_time", "card_id"):
            record[place] = around.format(text) if place != "card_id" else text
        elif place == "extra_value":
            record["note"] = around.format(text)
        elif place == "extra_key":
            record[text] = 1
        elif place == "nested":
            record["meta"] = {"items": [1, {"ref": around.format(text)}]}
        elif place == "kafka_key":
            key = pan.encode()
        else:
            headers.append(("x-card", text.replace("\x00", "").encode()))
    return {"value": dump(record), "key": key, "headers": headers, "pans": pans, "places": places}


def generate(run: str, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        out.append(data.draw(hostile(run, len(out))))

    collect()
    return out


def digit_stream(blob: bytes) -> str:
    """Every digit of ``blob`` in order, read leniently: JSON escapes decoded, Unicode digits as ASCII."""
    text = blob.decode("utf-8", "replace")
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if c.isdigit() and c.isascii())


def leaked(blob: bytes, pans: set[str]) -> set[str]:
    stream = digit_stream(blob)
    return {p for p in pans if p in stream}


async def read_outputs(bootstrap: str, topics: list[str]) -> list[bytes]:
    """Values, keys and headers of every record of ``topics``, dead letters' originals decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts: list[bytes] = []
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or {0})]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        behind = {tp for tp in tps if ends[tp] > 0}
        while behind:
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for m in messages:
                    parts += [m.value or b"", m.key or b""] + [v for _, v in m.headers]
                    if b'"original_b64"' in (m.value or b""):
                        parts.append(base64.b64decode(json.loads(m.value)["original_b64"]))
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return parts


async def test_no_card_number_leaves_the_worker_in_clear(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "pan")
    cases = generate(run, RECORDS)
    assert len(cases) == RECORDS
    pans = {p for case in cases for p in case["pans"]}
    # The lens sees through every encoding used: it finds the numbers placed in the values themselves.
    in_values = {p for c in cases for p, place in zip(c["pans"], c["places"], strict=True)
                 if place not in ("kafka_key", "header")}
    assert leaked(b"\n".join(c["value"] for c in cases), pans) == in_values
    env = worker_env(tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run)
    worker = launch(env, tmp_path / "worker.log")
    try:
        await wait_ready(worker)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topics.transactions, c["value"], key=c["key"], headers=c["headers"])
                    for c in cases]
            metadata = await asyncio.gather(*sent)
        finally:
            await producer.stop()
        await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=300)
        assert worker.alive(), worker.tail(40)
    finally:
        worker.stop()
    outputs = await read_outputs(kafka_bootstrap, [topics.scored, topics.dead_letter])
    dead = [json.loads(v) for v in outputs if v.startswith(b"{") and b'"original_b64"' in v]
    scored = [json.loads(v) for v in outputs if v.startswith(b"{") and b'"score"' in v]
    assert len(dead) + len(scored) == RECORDS, (len(dead), len(scored))

    # The reason: a card number in a field other than card_id is exactly what got pan_in_field.
    reasons = {(d["partition"], d["offset"]): d["reason"] for d in dead}
    for case, meta in zip(cases, metadata, strict=True):
        in_field = [p for p in case["places"] if p not in ALLOWED]
        reason = reasons.get((meta.partition, meta.offset))
        if in_field:
            assert reason is not None and reason.startswith("validation:pan_in_field:"), (case, reason)
        else:
            assert reason is None or not reason.startswith("validation:pan_in_field:"), (case, reason)
    assert len(scored) >= RECORDS // 10, "too few valid records to exercise the feature state"

    assert not leaked(b"\n".join(outputs), pans), "card numbers in an output topic"
    assert not leaked(await redis_contents(redis_url), pans), "card numbers in Redis"
    assert not leaked(worker.log.read_bytes(), pans), "card numbers in the worker log"
    print(f"{RECORDS} records, {len(pans)} card numbers: {len(scored)} scored, {len(dead)} dead-lettered "
          f"({sum(r.startswith('validation:pan_in_field:') for r in reasons.values())} pan_in_field); "
          f"no card number in {len(outputs)} output parts, Redis or the log; partitions {PARTITIONS}")
