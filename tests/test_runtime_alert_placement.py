"""With the bundle's own calibrated threshold, alerts fall on the anomalous stretches of the test clips.

Every test clip of the tiny scene is replayed through the real pipeline; an alert's frames (start to end)
must be mostly anomalous by the ground truth, and normal clips raise none.
"""

from __future__ import annotations

import socket
from pathlib import Path

from edge_ad.config import AlertConfig, RuntimeConfig, StreamConfig
from edge_ad.data.ucsd import open_ucsd
from edge_ad.export.bundle import load_bundle
from edge_ad.runtime.alerts import read_journal
from edge_ad.runtime.pipeline import Runtime


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alerts_fall_on_anomalous_frames(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    clips = open_ucsd(tiny_scene).test
    cfg = RuntimeConfig(
        endpoint=f"tcp://127.0.0.1:{_port()}",
        metrics_port=0,
        journal_dir=str(tmp_path / "journal"),
        pace="max",
        alerts=AlertConfig(min_frames=2, end_frames=3, cooldown_s=0.0),
    )
    streams = [StreamConfig(name=c.name, source=str(c.frame_paths[0].parent), kind="frames") for c in clips]
    runtime = Runtime(bundle, cfg, streams)
    try:
        runtime.start()
        assert runtime.done.wait(120), "the replay did not finish"
    finally:
        runtime.close()
    events = read_journal(tmp_path / "journal" / "alerts.jsonl")
    starts = {(e["stream"], e["alert_id"]): e["frame_index"] for e in events if e["event"] == "start"}
    ends = {(e["stream"], e["alert_id"]): e["frame_index"] for e in events if e["event"] == "end"}
    assert starts, "no alert on any test clip"
    labels = {c.name: c.labels for c in clips}
    for key, first in starts.items():
        stream = key[0]
        last = ends.get(key, len(labels[stream]) - 1)
        stretch = labels[stream][first : last + 1]
        assert stretch.mean() >= 0.5, f"alert {key} on frames {first}-{last} is mostly on normal frames"
    for clip in clips:
        if not clip.labels.any():
            assert not any(s == clip.name for s, _ in starts), f"{clip.name} has no anomaly but raised an alert"
