"""The local Kafka (KRaft) + Redis stack."""

from fraudstream.stack.errors import StackError
from fraudstream.stack.manager import LocalStack, StackState

__all__ = ["LocalStack", "StackError", "StackState"]
