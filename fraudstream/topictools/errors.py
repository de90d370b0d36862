"""Errors of the topic tools (``tail``, ``dlq``, ``schemas export``); none is fixed by retrying unchanged."""

from __future__ import annotations


class TopicToolError(Exception):
    """Base of the topic tools' errors; the message says what to do."""

    retryable: bool = False


class TopicNotFound(TopicToolError):
    def __init__(self, topic: str, existing: list[str]) -> None:
        self.topic = topic
        # Plain names first (the deployment's own topics: transactions, fraud-labels, …), then the longer
        # per-run names tests and demos create, so the list a user sees starts with what they likely meant.
        ordered = sorted(existing, key=lambda name: (name.count("-"), len(name), name))
        shown = ", ".join(ordered[:20]) + (" …" if len(ordered) > 20 else "")
        super().__init__(f"topic {topic!r} does not exist (topics: {shown or 'none'})")


class ResubmitRefused(TopicToolError):
    """A file of fixed records still has records that would be rejected again; nothing was sent."""
