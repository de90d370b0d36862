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
