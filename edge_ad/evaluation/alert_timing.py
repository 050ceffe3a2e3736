"""Alerts over a test set: the runtime's alert rule replayed on each clip's frame scores.

Frame AUROC ranks frames; an operator lives with alerts. At a method's alert threshold (ours from
calibration, a baseline's set the same way on the same normal footage) each clip's scores go through the tracker
`edge-ad run` uses, one frame every 1/fps seconds, and each alert is matched with the frame labels:

- an *anomaly* is a run of consecutive anomalous frames; it is alerted when an alert is on during it, and
  its delay counts the frames from its first frame to the first one with an alert on (0 when an alert was
  already on when it arrived);
- an alert that starts on a normal frame is *early* when it lasts into an anomaly, *false* otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from edge_ad.alerting import AlertTracker
from edge_ad.config import AlertConfig


@dataclass
class ClipAlerts:
    clip: str
    alerts: list[tuple[int, int]]  # first and last frame of each alert
    delays: list[int | None]  # per anomaly: frames until an alert was on; None when it never was
    early: int
    false: int
    normal_frames: int


@dataclass
class AlertSummary:
    threshold: float
    anomalies: int
    alerted: int
    median_delay: float | None
    max_delay: int | None
    early: int
    false: int
    normal_minutes: float
    clips: list[ClipAlerts]

    @property
    def false_per_hour(self) -> float | None:
        """Alerts started on normal frames (false and early) per hour of normal footage: the budget's unit."""
        return (self.false + self.early) / (self.normal_minutes / 60.0) if self.normal_minutes > 0 else None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "false_per_hour": self.false_per_hour}


def alert_spans(scores: np.ndarray, threshold: float, cfg: AlertConfig, fps: float) -> list[tuple[int, int]]:
    """(first, last) frame of every alert the runtime's rule raises on these scores."""
    tracker = AlertTracker("eval", threshold, cfg)
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, score in enumerate(np.asarray(scores, dtype=float)):
        event = tracker.update(i, i / fps, float(score))
        if event is not None and event.event == "start":
            start = i
        elif event is not None and event.event == "end" and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:  # still on when the clip ends
        spans.append((start, len(scores) - 1))
    return spans


def anomalies(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of every run of consecutive anomalous frames."""
    padded = np.concatenate([[0], np.asarray(labels, dtype=np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def match_clip(clip: str, labels: np.ndarray, spans: list[tuple[int, int]]) -> ClipAlerts:
    labels = np.asarray(labels, dtype=bool)
    on = np.zeros(labels.size, dtype=bool)
    for a, b in spans:
        on[a : b + 1] = True
    delays: list[int | None] = []
    for a, b in anomalies(labels):
        hit = np.flatnonzero(on[a : b + 1])
        delays.append(int(hit[0]) if hit.size else None)
    started_normal = [(a, b) for a, b in spans if not labels[a]]
    early = sum(bool(labels[a : b + 1].any()) for a, b in started_normal)
    return ClipAlerts(clip, spans, delays, early, len(started_normal) - early, int((~labels).sum()))


def summarise_alerts(
    scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], threshold: float, cfg: AlertConfig, fps: float
) -> AlertSummary:
    """Replay the alert rule on every clip (scores and labels by clip name) and add the clips up."""
    clips = [match_clip(c, labels[c], alert_spans(scores[c], threshold, cfg, fps)) for c in scores]
    delays = [d for c in clips for d in c.delays]
    hit = [d for d in delays if d is not None]
    return AlertSummary(
        threshold=float(threshold),
        anomalies=len(delays),
        alerted=len(hit),
        median_delay=float(np.median(hit)) if hit else None,
        max_delay=max(hit) if hit else None,
        early=sum(c.early for c in clips),
        false=sum(c.false for c in clips),
        normal_minutes=sum(c.normal_frames for c in clips) / fps / 60.0,
        clips=clips,
    )
