"""Alerts over a test set: the runtime's rule replayed on frame scores, matched with labels worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_ad.config import AlertConfig
from edge_ad.evaluation.alert_timing import alert_spans, anomalies, match_clip, summarise_alerts
from edge_ad.evaluation.evaluate import evaluate

RULE = AlertConfig(min_frames=2, end_frames=2, cooldown_s=0.0)


def test_anomalies_are_runs_of_anomalous_frames() -> None:
    assert anomalies(np.array([0, 1, 1, 0, 1])) == [(1, 2), (4, 4)]
    assert anomalies(np.array([1, 1, 0])) == [(0, 1)]
    assert anomalies(np.zeros(4)) == []


def test_spans_follow_the_runtime_rule() -> None:
    # two frames above start an alert on the second; two below end it on the second
    scores = np.array([0, 2, 2, 2, 0, 0, 0, 2, 0, 2, 2])
    assert alert_spans(scores, 1.0, RULE, fps=10) == [(2, 5), (10, 10)]  # the last one is still on at the end
    assert alert_spans(scores, 1.0, AlertConfig(min_frames=3, end_frames=2, cooldown_s=0.0), fps=10) == [(3, 5)]
    # an alert ending at frame 3 (0.3 s) with a cooldown of 1.05 s: the next one cannot start before frame 14
    cooldown = AlertConfig(min_frames=2, end_frames=2, cooldown_s=1.05)
    assert alert_spans(np.array([2, 2, 0, 0] + [2] * 14), 1.0, cooldown, fps=10) == [(1, 3), (14, 17)]


def test_alerts_are_matched_with_the_labels() -> None:
    labels = np.zeros(20, bool)
    labels[5:10] = True  # one anomaly, frames 5 to 9
    labels[15:18] = True  # another, frames 15 to 17
    # a false alert, one early (starts at 3, lasts into the first anomaly), the second anomaly 2 frames late
    c = match_clip("c", labels, [(0, 1), (3, 7), (17, 19)])
    assert c.delays == [0, 2] and c.early == 1 and c.false == 1 and c.normal_frames == 12
    # an alert that starts on an anomalous frame is neither; a missed anomaly has no delay
    c = match_clip("c", labels, [(7, 11)])
    assert c.delays == [2, None] and c.early == 0 and c.false == 0


def test_a_summary_adds_the_clips_up() -> None:
    labels = {"a": np.array([0, 0, 1, 1, 1, 1, 0, 0]), "b": np.zeros(8, int)}
    scores = {"a": np.array([0, 0, 0, 5, 5, 5, 0, 0]), "b": np.array([0, 5, 5, 0, 0, 0, 0, 0])}
    s = summarise_alerts(scores, labels, 1.0, RULE, fps=2.0)
    assert (s.anomalies, s.alerted, s.median_delay, s.max_delay, s.early, s.false) == (1, 1, 2.0, 2, 0, 1)
    assert s.normal_minutes == (4 + 8) / 2.0 / 60.0
    assert s.false_per_hour == 1 / (12 / 2.0 / 3600.0)  # one false alert in 6 s of normal footage
    assert [c.alerts for c in s.clips] == [[(4, 7)], [(2, 4)]]


def test_eval_reports_alerts_for_our_bundle_and_the_baselines(
    tiny_bundle: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    results = evaluate(tiny_scene, tmp_path / "r", bundle=tiny_bundle)
    assert set(results.alerts) == set(results.summaries()) >= {"edge-ad (bundle)", "frame-diff-k1", "mog2"}
    ours = results.alerts["edge-ad (bundle)"]
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert ours.threshold == manifest["calibration"]["threshold"]
    # recomputed from the report's own frame scores and labels
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    labels = {c: np.array(v) for c, v in report["labels"].items()}
    scores = {c: np.array(v) for c, v in report["frame_scores"]["edge-ad (bundle)"].items()}
    again = summarise_alerts(
        scores, labels, ours.threshold, AlertConfig(**manifest["config"]["runtime"]["alerts"]), 10.0
    )
    assert report["alerts"]["edge-ad (bundle)"]["alerted"] == again.alerted == ours.alerted
    assert report["alerts"]["edge-ad (bundle)"]["false"] == again.false
    assert "## Alerts" in (tmp_path / "r" / "report.md").read_text()


def test_a_site_threshold_replaces_ours_as_it_does_live(tiny_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    """`edge-ad eval --config/--set` give the rule `edge-ad run` would get; its threshold replaces the calibrated
    one for our model, with maps compared beside it or not; a map alone has no alert threshold."""
    calibrated = json.loads((tiny_run / "calibration.json").read_text())["threshold"]
    site = AlertConfig(threshold=3.0 * calibrated)
    results = evaluate(tiny_scene, tmp_path / "r", run=tiny_run, baselines=False, alerts=site)
    assert results.alerts["edge-ad"].threshold == 3.0 * calibrated
    assert "edge-ad:nll" not in results.alerts  # a map alone has no alert threshold
    compared = evaluate(tiny_scene, tmp_path / "c", run=tiny_run, baselines=False, compare=["nll"], alerts=site)
    assert compared.alerts["edge-ad"].threshold == 3.0 * calibrated
    assert "edge-ad:nll" in compared.summaries() and "edge-ad:nll" not in compared.alerts


def test_too_little_normal_footage_leaves_the_baselines_out_of_the_alert_table(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    """One short training clip: MOG2 warms up on all of it, nothing is left to calibrate the baselines on."""
    from edge_ad.data.synth import make_scene

    scene = tmp_path / "scene"
    make_scene(scene, n_train=1, n_test=2, frames=48, seed=5, size=(96, 128))
    results = evaluate(scene, tmp_path / "r", bundle=tiny_bundle)
    assert "too little normal footage to calibrate the baselines" in capsys.readouterr().out
    assert set(results.alerts) == {"edge-ad (bundle)"}
    assert {"frame-diff-k1", "mog2"} <= set(results.summaries())  # still scored, only not alerted
