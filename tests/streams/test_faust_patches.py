"""The faust patches (streams/faust_patches.py) are applied once, only on the tested faust, mode and aiokafka,
and a change in the source of any library function they override, copy or reach into fails here by name."""

from __future__ import annotations

import hashlib
import importlib.metadata

import faust
import pytest

from streams import faust_patches
from streams.errors import UntestedLibrary
from streams.faust_patches import REVIEWED_SOURCES, TESTED, ChunkConductor, EagerDrainTransport


def _library_of(name: str) -> str:
    return {"faust": "faust-streaming", "mode": "mode-streaming", "aiokafka": "aiokafka"}[name.split()[0]]


@pytest.mark.parametrize("name", sorted(REVIEWED_SOURCES))
def test_the_patched_originals_are_the_reviewed_ones(name: str) -> None:
    digest = hashlib.sha256(faust_patches.patched_sources()[name].encode()).hexdigest()
    library = _library_of(name)
    version = importlib.metadata.version(library)
    assert digest == REVIEWED_SOURCES[name], (
        f"{library} {version} changed {name.split(' ', 1)[1]}; re-check streams/faust_patches.py "
        f"(then update REVIEWED_SOURCES and TESTED)")


def test_every_patched_original_has_a_reviewed_source() -> None:
    assert sorted(faust_patches.patched_sources()) == sorted(REVIEWED_SOURCES)


def test_the_installed_libraries_are_the_tested_ones() -> None:
    faust_patches.check_versions()  # raises on another version
    for library, version in TESTED.items():
        assert importlib.metadata.version(library) == version


def test_an_untested_faust_is_refused_in_one_line() -> None:
    def installed(library: str) -> str:
        return "0.16.0" if library == "faust-streaming" else TESTED[library]

    with pytest.raises(UntestedLibrary) as raised:
        faust_patches.check_versions(installed)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("faust-streaming 0.16.0 is installed but streams/faust_patches.py was checked "
                              "against 0.15.3 only"), message


def test_install_applies_the_patches_once() -> None:
    app = faust.App("patches-test", broker="kafka://127.0.0.1:1", env={})
    faust_patches.install(app, chunked_topics=["tx"], fetch_min_bytes=65_536, fetch_max_wait_ms=10)
    transport = app.transport
    assert isinstance(transport, EagerDrainTransport)
    assert (transport.fetch_min_bytes, transport.fetch_max_wait_ms) == (65_536, 10)
    conductor = app.topics
    assert isinstance(conductor, ChunkConductor) and conductor.chunked_topics == {"tx"}
    with pytest.raises(RuntimeError, match="already installed"):
        faust_patches.install(app, chunked_topics=["tx"], fetch_min_bytes=1, fetch_max_wait_ms=1500)


def test_the_fetch_hold_follows_the_arrival_rate() -> None:
    """Patch 7: the broker holds a fetch only while records arrive fast enough to bring ``hold_min_records``
    within the hold (10 ms here: 16 records = 1,600 tx/s); a lone record is fetched at once."""
    hold = faust_patches.FetchHold(min_bytes=65536, max_wait_ms=10, hold_min_records=16)
    assert hold.next_min_bytes == 65536  # as configured until the first window says otherwise
    t = 1000.0
    hold._since = t
    assert not hold.after_fetch(1, now=t + 0.01)  # the window (50 ms) is not over yet
    assert hold.after_fetch(1, now=t + 0.06) and hold.next_min_bytes == 1  # 2 records in 60 ms: light load
    t += 0.06
    for i in range(1, 6):  # 3,000 tx/s in fetches of 3 records, every millisecond
        hold.after_fetch(3, now=t + i * 0.001)
    assert hold.next_min_bytes == 1  # still within the window
    for i in range(6, 60):
        hold.after_fetch(3, now=t + i * 0.001)
    assert hold.next_min_bytes == 65536  # 30 records per 10 ms hold: worth holding
    assert not hold.after_fetch(40, now=t + 0.061)  # a full fetch keeps the hold
    always = faust_patches.FetchHold(min_bytes=65536, max_wait_ms=10, hold_min_records=0)
    assert not always.after_fetch(0, now=t + 10) and always.next_min_bytes == 65536


def test_a_burst_holds_the_next_fetch_at_once() -> None:
    hold = faust_patches.FetchHold(min_bytes=65536, max_wait_ms=10, hold_min_records=16)
    hold.holding = False
    assert hold.after_fetch(500) and hold.next_min_bytes == 65536
