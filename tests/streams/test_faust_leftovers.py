"""``faust_leftovers`` names what faust itself creates for an app id (its leader-election topic and its table
directory), read off the app as the worker builds it, so a benchmark's clean-up deletes the real things."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from streams.app import create_app, faust_leftovers
from streams.runtime import WorkerRuntime


def test_the_leftovers_are_the_leader_topic_and_table_directory_faust_uses(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, app_id="bench-latency-abc123")
    app = create_app(settings, WorkerRuntime(settings))

    topic, table_dir = faust_leftovers(settings)

    assert topic == app._leader_assignor._leader_topic_name  # type: ignore[attr-defined]
    assert table_dir == Path(app.conf.datadir)
    assert table_dir.parent.is_dir()  # faust creates only the last level
    assert "bench-latency-abc123" in topic and table_dir.name.startswith("bench-latency-abc123")
