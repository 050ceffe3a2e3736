"""What the evaluator runs: anything that turns a clip into anomaly maps and frame scores.

Our exported model and the baselines share this protocol, so they are scored on the same frames, at the
same resolution, by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np

from edge_ad.alerting import normal_spread


@runtime_checkable
class MapMethod(Protocol):
    name: str

    def reset(self) -> None:
        """A new clip starts: forget temporal state carried over from the previous clip."""

    def score_clip(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 [T,H,W] (the clip as stored) -> (maps float32 [T,h,w] at the method's resolution,
        frame scores float32 [T])"""


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[T,h,w] -> float32 [T,H,W] with bilinear interpolation, to compare maps with masks at one resolution."""
    maps = np.asarray(maps, dtype=np.float32)
    h, w = size
    if maps.shape[1:] == (h, w):
        return maps
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps])


def frame_score_from_map(
    anomaly_map: np.ndarray,
    mode: Literal["topk", "max"] = "topk",
    topk_fraction: float = 0.01,
    smoothing_sigma: float = 0.0,
) -> np.ndarray:
    """Map(s) [..., h, w] -> score(s) [...]: the maximum, or the mean of the top ``topk_fraction`` pixels.

    For baselines only: the model computes its frame score inside its exported graph. The top-k mean is
    the same rule the model uses, so a small anomaly counts the same way for every method, while a single
    hot pixel does not decide a frame.
    """
    m = np.asarray(anomaly_map, dtype=np.float32)
    if m.ndim < 2:
        raise ValueError(f"expected a map [..., h, w], got shape {m.shape}")
    if smoothing_sigma > 0:
        flat = m.reshape(-1, *m.shape[-2:])
        m = np.stack([cv2.GaussianBlur(x, (0, 0), smoothing_sigma) for x in flat]).reshape(m.shape)
    pixels = m.reshape(*m.shape[:-2], -1)
    if mode == "max":
        return pixels.max(axis=-1)
    if mode != "topk":
        raise ValueError(f"unknown frame score mode {mode!r}; use 'topk' or 'max'")
    k = max(1, int(round(topk_fraction * pixels.shape[-1])))
    top = np.partition(pixels, pixels.shape[-1] - k, axis=-1)[..., -k:]
    return top.mean(axis=-1)


@dataclass
class FrameScoreRule:
    """The model's frame-score rule, for the baselines: the max, a top-k mean, or (with several areas) the
    max over areas of each area's top-k mean standardised on normal frames, as calibration does for the
    model. ``fit`` takes the maps a baseline made of normal frames; a single area needs no fit."""

    mode: Literal["topk", "max"] = "topk"
    areas: tuple[float, ...] = (0.01,)
    center: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def needs_fit(self) -> bool:
        return self.mode == "topk" and len(self.areas) > 1

    def area_scores(self, maps: np.ndarray) -> np.ndarray:
        """[A, ...]: each area's top-k mean."""
        return np.stack([frame_score_from_map(maps, "topk", a) for a in self.areas])

    def fit(self, normal_maps: np.ndarray) -> None:
        spreads = [normal_spread(s) for s in self.area_scores(normal_maps).reshape(len(self.areas), -1)]
        self.center, self.scale = (np.array(v, np.float32) for v in zip(*spreads, strict=True))

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        if self.mode == "max":
            return frame_score_from_map(maps, "max")
        if not self.needs_fit:
            return frame_score_from_map(maps, "topk", self.areas[0])
        if len(self.center) != len(self.areas):
            raise ValueError("a frame score over several areas needs fit() on normal frames first")
        shape = (-1,) + (1,) * (np.ndim(maps) - 2)
        return ((self.area_scores(maps) - self.center.reshape(shape)) / self.scale.reshape(shape)).max(axis=0)
