"""The alert rule, defined once: the runtime runs it live, evaluation replays it over a test set.

A frame score above the threshold for one frame is noise; an operator wants one alert per incident. The
tracker starts an alert after ``min_frames`` consecutive frames at or above ``on`` x threshold, keeps it
while the score stays above ``off`` x threshold (hysteresis), ends it after ``end_frames`` frames below,
and waits ``cooldown_s`` before the next one. Times are the frames' capture times, so a replay behaves as
the live stream did. The threshold comes from a false-alarm budget on normal footage (``frame_threshold``).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_ad.config import AlertConfig


@dataclass
class AlertEvent:
    stream: str
    event: str  # "start" | "update" | "end"
    alert_id: str
    frame_index: int
    ts: float
    score: float
    peak_score: float
    threshold: float
    boxes: list[list[int]] = field(default_factory=list)  # [x, y, w, h] in source-frame pixels
    snapshot: str | None = None  # JPEG file name, next to the journal

    def to_json(self) -> dict:
        return {"v": 1, **asdict(self)}


class AlertTracker:
    """The hysteresis state machine of one stream; feed it every frame's score in capture order."""

    def __init__(self, stream: str, threshold: float, cfg: AlertConfig):
        self.stream = stream
        self.threshold = threshold
        self.cfg = cfg
        self.active_id: str | None = None
        self._above = 0  # consecutive frames at or above on x threshold while idle
        self._below = 0  # consecutive frames below off x threshold while active
        self._peak = 0.0
        self._last_event_ts = 0.0
        self._quiet_until = float("-inf")  # end of the cooldown

    def update(self, frame_index: int, ts: float, score: float) -> AlertEvent | None:
        if self.active_id is None:
            self._above = self._above + 1 if score >= self.cfg.on * self.threshold else 0
            if self._above >= self.cfg.min_frames and ts >= self._quiet_until:
                self.active_id = uuid.uuid4().hex[:12]
                self._below, self._peak, self._last_event_ts = 0, score, ts
                return self._event("start", frame_index, ts, score)
            return None
        self._peak = max(self._peak, score)
        self._below = self._below + 1 if score < self.cfg.off * self.threshold else 0
        if self._below >= self.cfg.end_frames:
            return self.finish(frame_index, ts, score)
        if ts - self._last_event_ts >= self.cfg.update_s:
            self._last_event_ts = ts
            return self._event("update", frame_index, ts, score)
        return None

    def finish(self, frame_index: int, ts: float, score: float) -> AlertEvent | None:
        """End the open alert, if any (also when its stream ends or the runtime shuts down)."""
        if self.active_id is None:
            return None
        event = self._event("end", frame_index, ts, score)
        self.active_id = None
        self._above = 0
        self._quiet_until = ts + self.cfg.cooldown_s
        return event

    def _event(self, kind: str, frame_index: int, ts: float, score: float) -> AlertEvent:
        assert self.active_id is not None
        return AlertEvent(
            self.stream, kind, self.active_id, frame_index, ts, float(score), float(self._peak), self.threshold
        )


def normal_spread(scores: np.ndarray) -> tuple[float, float]:
    """(median, 99th percentile - median) of frame scores on normal frames: a score's scale in false-alarm
    terms, used to put maps and top-k areas of different kinds on one footing before a max."""
    mid, hi = np.quantile(scores, [0.5, 0.99])
    return float(mid), float(max(hi - mid, 1e-6))


def frame_threshold(scores: np.ndarray, per_hour: float, fps: float) -> dict[str, Any]:
    """The frame-score level that normal footage exceeds at most ``per_hour`` times an hour."""
    n = len(scores)
    allowed = per_hour / (fps * 3600.0) * n  # exceedances the budget allows on this much footage
    ordered = np.sort(scores)
    if allowed >= 1:
        # Just above the (allowed + 1)-th highest score: the tracker fires at or above the threshold, so a
        # threshold on that score itself would let one more frame through than the budget allows.
        thr = float(np.nextafter(ordered[n - int(allowed) - 1], np.inf))
        resolved = True
    else:  # too little validation footage to see the budget: extrapolate above the worst normal frame
        spread = float(ordered[-1] - np.median(ordered))
        thr = float(ordered[-1] + 0.1 * max(spread, 1e-6))
        resolved = False
    return {
        "threshold": thr,
        "budget_resolved": resolved,
        "val_minutes": n / fps / 60.0,
        "val_score_max": float(ordered[-1]),
        "val_score_median": float(np.median(ordered)),
    }
