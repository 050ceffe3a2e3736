"""What the evaluator runs: anything that turns a clip into anomaly maps and frame scores.

Our exported model and the baselines share this protocol, so they are scored on the same frames, at the
same resolution, by the same code.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np


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
