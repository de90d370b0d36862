"""Session fixtures: the real local stack (Kafka KRaft + redis-server), started once through the same code
as ``fraudstream stack up``, in a private home so a developer's own stack is never touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraudstream.stack import LocalStack, StackState

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fraudstream-home")


@pytest.fixture(scope="session")
def local_stack(stack_home: Path) -> Iterator[LocalStack]:
    stack = LocalStack(stack_home)
    stack.up(timeout_s=120)
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> StackState:
    return local_stack.load()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: StackState) -> str:
    return stack.bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: StackState) -> str:
    return stack.redis_url
