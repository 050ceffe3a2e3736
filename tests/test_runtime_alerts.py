"""The alert state machine, driven by score sequences; regions, snapshots and the journal."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.alerting import AlertTracker
from edge_ad.config import AlertConfig, load_config
from edge_ad.errors import UserError
from edge_ad.runtime.alerts import AlertJournal, read_journal, regions, render_snapshot


def run(scores: list[float], **cfg: float) -> list[tuple[str, int]]:
    """Feed one score per frame at 1 frame/s; return (event, frame) pairs."""
    tracker = AlertTracker("cam", threshold=1.0, cfg=AlertConfig(**cfg))
    events = []
    for i, s in enumerate(scores):
        event = tracker.update(i, float(i), s)
        if event:
            events.append((event.event, i))
    return events


BASE = {"on": 1.0, "off": 0.5, "min_frames": 2, "end_frames": 3, "cooldown_s": 0.0, "update_s": 100.0}


def test_one_frame_above_threshold_is_not_an_alert() -> None:
    assert run([0, 2, 0, 2, 0, 0], **BASE) == []


def test_starts_after_min_frames_and_ends_after_end_frames_below_off() -> None:
    scores = [0, 2, 2, 2, 0.1, 0.1, 0.1, 0, 0]
    assert run(scores, **BASE) == [("start", 2), ("end", 6)]


def test_scores_between_off_and_on_keep_the_alert_on() -> None:
    # 0.7 is below on (1.0) but above off (0.5): hysteresis keeps the alert open.
    scores = [2, 2, 0.7, 0.7, 0.7, 0.7, 0.7, 0.2, 0.2, 0.2]
    assert run(scores, **BASE) == [("start", 1), ("end", 9)]


def test_a_frame_above_off_restarts_the_end_count() -> None:
    scores = [2, 2, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]
    assert run(scores, **BASE) == [("start", 1), ("end", 7)]


def test_the_score_must_be_above_on_for_consecutive_frames() -> None:
    # Between on and off does not count towards a start.
    assert run([2, 0.7, 2, 0.7, 2], **BASE) == []


def test_cooldown_holds_back_the_next_alert() -> None:
    cfg = {**BASE, "cooldown_s": 5.0}
    # alert ends at t=4; frames 5..8 are high but inside the cooldown (until t=9); it restarts at t=9.
    scores = [2, 2, 0, 0, 0, 2, 2, 2, 2, 2, 2]
    assert run(scores, **cfg) == [("start", 1), ("end", 4), ("start", 9)]


def test_without_cooldown_the_next_alert_needs_min_frames_again() -> None:
    scores = [2, 2, 0, 0, 0, 2, 2]
    assert run(scores, **BASE) == [("start", 1), ("end", 4), ("start", 6)]


def test_updates_while_active_at_most_every_update_s() -> None:
    cfg = {**BASE, "update_s": 2.0}
    scores = [2, 2, 2, 2, 2, 2, 2, 0, 0, 0]
    assert run(scores, **cfg) == [
        ("start", 1),
        ("update", 3),
        ("update", 5),
        ("update", 7),  # still open while the score falls: updates keep their rhythm until the end
        ("end", 9),
    ]


def test_event_fields_and_finish_closes_an_open_alert() -> None:
    tracker = AlertTracker("door", threshold=0.5, cfg=AlertConfig(min_frames=1))
    start = tracker.update(10, 100.0, 0.9)
    assert start is not None and start.event == "start" and start.stream == "door"
    assert start.frame_index == 10 and start.ts == 100.0 and start.threshold == 0.5
    tracker.update(11, 100.1, 1.5)
    end = tracker.finish(12, 100.2, 0.4)
    assert end is not None and end.event == "end" and end.alert_id == start.alert_id
    assert end.peak_score == pytest.approx(1.5)
    assert tracker.active_id is None and tracker.finish(13, 100.3, 0.1) is None


def test_off_above_on_is_refused() -> None:
    with pytest.raises(UserError, match="alerts.off"):
        load_config(None, ["runtime.alerts.on=1.0", "runtime.alerts.off=1.5"])


def test_regions_are_boxes_in_source_pixels_largest_first() -> None:
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 30:40] = 1.0  # 10x10 at (30, 10)
    amap[50:52, 5:7] = 1.0  # 2x2 at (5, 50)
    boxes = regions(amap, 0.5, (128, 256), max_boxes=16)  # the source frame is 256 wide, 128 high
    assert boxes == [[120, 20, 40, 20], [20, 100, 8, 4]]
    assert regions(amap, 0.5, (128, 256), max_boxes=1) == [[120, 20, 40, 20]]
    assert regions(amap, 2.0, (128, 256), max_boxes=16) == []


def test_snapshot_is_a_jpeg_of_the_source_frame(tmp_path: Path) -> None:
    frame = np.full((120, 160), 80, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[20:40, 20:40] = 2.0
    jpeg = render_snapshot(frame, amap, map_scale=2.0, level=1.0, boxes=[[50, 37, 25, 38]])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3)
    # The hot region is tinted (no longer gray), the rest of the frame is untouched.
    hot, cold = image[60, 62].astype(int), image[5, 5].astype(int)
    assert np.ptp(hot) > 40 and np.ptp(cold) < 10


def test_journal_writes_the_snapshot_then_one_json_line_per_event(tmp_path: Path) -> None:
    tracker = AlertTracker("cam", threshold=1.0, cfg=AlertConfig(min_frames=1))
    journal = AlertJournal(tmp_path / "alerts")
    start = tracker.update(3, 1.0, 5.0)
    assert start is not None
    start.boxes = [[1, 2, 3, 4]]
    journal.record(start, b"\xff\xd8fake-jpeg")
    end = tracker.finish(4, 2.0, 0.0)
    assert end is not None
    journal.record(end, None)
    # Readable before close: every line is on disk when record() returns.
    lines = (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["start", "end"]
    journal.close()
    events = read_journal(tmp_path / "alerts" / "alerts.jsonl")
    assert events[0]["boxes"] == [[1, 2, 3, 4]] and events[0]["alert_id"] == events[1]["alert_id"]
    assert (tmp_path / "alerts" / events[0]["snapshot"]).read_bytes() == b"\xff\xd8fake-jpeg"
    assert events[1]["snapshot"] is None


def test_an_event_after_a_torn_last_line_is_not_lost(tmp_path: Path) -> None:
    """Until 2026-12-07 the next run's first event was appended onto the torn line, and both were skipped."""
    (tmp_path / "alerts.jsonl").write_text('{"v": 1, "stream": "cam", "event": "start", "alert_id": "0000')
    journal = AlertJournal(tmp_path)
    start = AlertTracker("cam", threshold=1.0, cfg=AlertConfig(min_frames=1)).update(3, 1.0, 5.0)
    assert start is not None
    journal.record(start, None)
    journal.close()
    assert [(e["event"], e["alert_id"]) for e in read_journal(tmp_path / "alerts.jsonl")] == [("start", start.alert_id)]


def test_unwritable_journal_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write the alert journal"):
        AlertJournal(blocker / "alerts")


def test_a_resolved_budget_lets_through_at_most_the_frames_it_allows() -> None:
    from edge_ad.alerting import frame_threshold

    rng = np.random.default_rng(3)
    scores = rng.random(36_000 * 3)  # three hours at 10 frames/s
    for per_hour in (1.0, 2.0, 5.0):
        for s in (scores, np.round(scores, 3)):  # and with ties
            calib = frame_threshold(s, per_hour, fps=10.0)
            assert calib["budget_resolved"]
            # The tracker's rule: a frame counts at or above the threshold.
            assert int((s >= calib["threshold"]).sum()) <= 3 * per_hour
        assert int((scores >= frame_threshold(scores, per_hour, 10.0)["threshold"]).sum()) == 3 * per_hour
