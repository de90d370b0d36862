"""The Kafka jar cache notices a changed pom: a cache resolved before kafka-tools was added gets the tools
(and keeps working for brokers that run from it meanwhile)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fraudstream.stack import kafka

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("mvn") is None, reason="Maven is not installed (apt-get install -y maven)")
def test_a_cache_from_an_older_pom_is_resolved_again_with_the_tools(tmp_path: Path) -> None:
    cache = tmp_path / f"kafka-{kafka.KAFKA_VERSION}"
    old_libs = cache / "libs"
    old_libs.mkdir(parents=True)
    (old_libs / "kafka_2.13-4.1.1.jar").write_bytes(b"a jar of the old cache")
    (cache / ".complete").write_text(kafka.KAFKA_VERSION + "\n")  # what the cache held before: no fingerprint

    libs = kafka.ensure_jars(cache)

    assert libs == old_libs
    assert (libs / f"kafka-tools-{kafka.KAFKA_VERSION}.jar").is_file()
    assert (libs / f"kafka-clients-{kafka.KAFKA_VERSION}.jar").is_file()
    assert (libs / "kafka_2.13-4.1.1.jar").read_bytes() != b"a jar of the old cache"  # swapped, not mixed
    assert (cache / ".complete").read_text().strip() == kafka.jar_fingerprint()
    assert sorted(p.name for p in cache.iterdir()) == [".complete", "libs"]  # no staging left behind
    # Resolved once: the next call trusts the fingerprint and does not run Maven again.
    (libs / "marker").write_text("kept")
    assert kafka.ensure_jars(cache) == libs and (libs / "marker").exists()
