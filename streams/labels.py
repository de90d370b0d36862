"""``fraud-labels`` → the delayed-label risk state (only usable by features from ``available_at`` on)."""

from __future__ import annotations

from collections.abc import Sequence

from features.events import LabelEvent
from features.store import OnlineFeatureStore
from schemas import FraudLabel
from schemas.codec import Rejection, dead_letter, decode, encode, readable_ids
from streams.identity import CardHasher
from streams.messages import InboundMessage, OutboundMessage, Publisher
from streams.retry import retry_forever


class LabelHandler:
    def __init__(
        self, *, features: OnlineFeatureStore, publisher: Publisher, hasher: CardHasher, dead_letter_topic: str,
        max_message_bytes: int,
    ) -> None:
        self.features = features
        self.publisher = publisher
        self.hasher = hasher
        self.dead_letter_topic = dead_letter_topic
        self.max_message_bytes = max_message_bytes
        self.applied = 0
        self.rejected = 0

    async def handle(self, messages: Sequence[InboundMessage]) -> None:
        labels: list[LabelEvent] = []
        rejected: list[OutboundMessage] = []
        for message in messages:
            parsed = decode(FraudLabel, message.value, max_bytes=self.max_message_bytes)
            if isinstance(parsed, Rejection):
                transaction_id, card_id = readable_ids(message.value)
                record = dead_letter(parsed, message.value, topic=message.topic, partition=message.partition,
                                     offset=message.offset, transaction_id=transaction_id,
                                     card_ref=None if card_id is None else self.hasher.reference(card_id))
                key = f"{message.topic}:{message.partition}".encode()
                rejected.append(OutboundMessage(self.dead_letter_topic, key, encode(record)))
                continue
            labels.append(
                LabelEvent(
                    transaction_id=parsed.transaction_id, card_ref=self.hasher.reference(parsed.card_id),
                    terminal_id=parsed.terminal_id, event_time=parsed.event_time.timestamp(),
                    available_at=parsed.available_at.timestamp(), is_fraud=parsed.is_fraud,
                )
            )
        if labels:
            await retry_forever(lambda: self.features.apply_labels(labels), what="label state in Redis")
        if rejected:
            await retry_forever(lambda: self.publisher.publish(rejected), what="publish to Kafka")
        self.applied += len(labels)
        self.rejected += len(rejected)
