"""What a user would try before a learned model: frame differencing and a MOG2 background model.

Both see the frames exactly as the model does (``to_model_frame`` at the model size) and score frames with
the model's rule (top-k mean of the map, over the same areas, standardised on normal frames as calibration
does for the model), so any gap in the report comes from the maps alone. Both keep
their state across ``score_clip`` calls until ``reset``, so a clip scored in pieces scores like a whole one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from edge_ad.alerting import frame_threshold
from edge_ad.data.preprocess import to_model_frame
from edge_ad.evaluation.methods import FrameScoreRule


def _gray(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return to_model_frame(frame, size, grayscale=True)[0]


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


class PixelBaseline:
    """A map per frame from the frame and the method's state; frame scores by the shared rule."""

    rule: FrameScoreRule
    alert_threshold: float | None = None  # set by ``calibrate``, as calibration sets the model's

    def reset(self) -> None:
        raise NotImplementedError

    def _map(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def maps(self, frames: np.ndarray) -> np.ndarray:
        return np.stack([self._map(f) for f in frames]).astype(np.float32)

    def score_clip(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = self.maps(frames)
        return maps, self.rule(maps).astype(np.float32)

    def calibrate(self, normal_clips: Sequence[np.ndarray], false_alarms_per_hour: float, fps: float) -> None:
        """What calibration does for the model, on this method's maps of normal clips: standardise the frame
        score's areas (nothing to do for one area), then set the alert threshold from the false-alarm budget.
        Each clip starts clean, as a test clip does (a frame difference across two clips' seam is no motion),
        and so does the method afterwards: calibrating leaves no temporal state behind. Only scores are kept
        (the maps of an hour of footage would not fit), so several areas cost a second pass."""
        if self.rule.needs_fit:
            self.rule.fit(np.concatenate([self._fresh_maps(clip) for clip in normal_clips]))
        scores = np.concatenate([self.rule(self._fresh_maps(clip)) for clip in normal_clips])
        self.reset()
        self.alert_threshold = frame_threshold(scores, false_alarms_per_hour, fps)["threshold"]

    def _fresh_maps(self, clip: np.ndarray) -> np.ndarray:
        self.reset()
        return self.maps(clip)


class FrameDifference(PixelBaseline):
    """Map = |x_t - x_{t-k}|, blurred: lights up whatever moves, anomalous or not. Until a clip has k frames
    of history its first frame stands in, as in the model's motion channels."""

    def __init__(
        self,
        k: int = 1,
        size: tuple[int, int] = (128, 128),
        blur_sigma: float = 2.0,
        rule: FrameScoreRule | None = None,
        name: str | None = None,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.size = size
        self.blur_sigma = blur_sigma
        self.rule = rule or FrameScoreRule()
        self.name = name or f"frame-diff-k{k}"
        self._history: deque[np.ndarray] = deque(maxlen=k + 1)

    def reset(self) -> None:
        self._history.clear()

    def _map(self, frame: np.ndarray) -> np.ndarray:
        x = _gray(frame, self.size)
        self._history.append(x)
        return _blur(np.abs(x - self._history[0]), self.blur_sigma)


class MOG2(PixelBaseline):
    """OpenCV's Gaussian-mixture background subtractor; map = its foreground mask (0/1), blurred into a soft
    score. A user would run it on the camera before, so ``warm_up`` feeds it normal training frames, and
    every ``reset`` restarts from that warmed-up background rather than from nothing."""

    def __init__(
        self,
        history: int = 200,
        var_threshold: float = 16.0,
        detect_shadows: bool = False,
        size: tuple[int, int] = (128, 128),
        blur_sigma: float = 2.0,
        learning_rate: float = -1.0,
        rule: FrameScoreRule | None = None,
        name: str = "mog2",
    ) -> None:
        self.history = history
        self.var_threshold = var_threshold
        self.detect_shadows = detect_shadows
        self.size = size
        self.blur_sigma = blur_sigma
        self.learning_rate = learning_rate
        self.rule = rule or FrameScoreRule()
        self.name = name
        self._warm: np.ndarray | None = None
        self._subtractor = self._fresh()

    def _fresh(self) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=self.detect_shadows
        )

    def _input(self, frame: np.ndarray) -> np.ndarray:
        # MOG2's variance threshold is calibrated for 8-bit intensities.
        return np.round(_gray(frame, self.size) * 255.0).astype(np.uint8)

    def warm_up(self, frames: Iterable[np.ndarray]) -> None:
        """Learn the background from normal frames. Only ``history`` of them (evenly spread) are kept: MOG2
        forgets older frames at that rate anyway, and every reset replays them."""
        inputs = [self._input(f) for f in frames]
        if not inputs:
            raise ValueError("warm_up needs at least one frame")
        idx = np.unique(np.linspace(0, len(inputs) - 1, min(len(inputs), self.history)).round().astype(int))
        self._warm = np.stack([inputs[i] for i in idx])
        self.reset()

    def reset(self) -> None:
        self._subtractor = self._fresh()
        if self._warm is not None:
            for x in self._warm:
                self._subtractor.apply(x, learningRate=-1.0)

    def _map(self, frame: np.ndarray) -> np.ndarray:
        foreground = self._subtractor.apply(self._input(frame), learningRate=self.learning_rate)
        return _blur((foreground > 127).astype(np.float32), self.blur_sigma)  # 127 = shadow
