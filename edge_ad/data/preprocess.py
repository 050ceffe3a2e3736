"""Frame preprocessing and temporal channels, shared by training, evaluation and the runtime.

This is numpy and OpenCV only, so the runtime (no torch) turns camera frames into exactly the tensors the
model was trained on. A model with ``temporal_offsets=[k]`` sees the frame plus its difference to the frame
k steps back; ``ChannelBuilder`` keeps the few past frames a stream needs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np


def to_model_frame(frame: np.ndarray, size: tuple[int, int], grayscale: bool = True) -> np.ndarray:
    """Any camera frame (uint8/uint16/float, gray or BGR) -> float32 [C, H, W] in [0, 1] at the model size."""
    img = np.asarray(frame)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if grayscale and img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    elif not grayscale and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif img.dtype == np.uint16:
        scale = 1.0 / 65535.0
    else:
        scale = 1.0
    h, w = size
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    out = img.astype(np.float32) * np.float32(scale)
    np.clip(out, 0.0, 1.0, out=out)
    return out[None] if out.ndim == 2 else np.ascontiguousarray(out.transpose(2, 0, 1))


def encode_difference(current: np.ndarray, past: np.ndarray) -> np.ndarray:
    """Signed difference mapped to [0, 1] (0.5 = no change), so every channel shares one value range."""
    return 0.5 + 0.5 * (current - past)


class ChannelBuilder:
    """Stacks a frame with its differences to earlier frames of the same stream.

    Until a stream has k frames of history the oldest frame it has stands in, so the first frames of a
    clip (and of a stream after a reconnect) are scored with a zero-ish motion channel rather than skipped.
    """

    def __init__(self, offsets: Sequence[int]) -> None:
        self.offsets = sorted(int(k) for k in offsets)
        self._history: deque[np.ndarray] = deque(maxlen=max(self.offsets, default=0) + 1)

    def reset(self) -> None:
        self._history.clear()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` is a preprocessed [C, H, W] frame; returns [C * (1 + len(offsets)), H, W]."""
        self._history.append(frame)
        if not self.offsets:
            return frame
        parts = [frame]
        n = len(self._history)
        for k in self.offsets:
            past = self._history[max(n - 1 - k, 0)]
            parts.append(encode_difference(frame, past))
        return np.concatenate(parts, axis=0)


def model_channels(
    frames: Iterable[np.ndarray], size: tuple[int, int], grayscale: bool, offsets: Sequence[int]
) -> Iterator[np.ndarray]:
    """Camera frames -> the model's input, one frame at a time: a long recording never sits in memory whole."""
    builder = ChannelBuilder(offsets)
    for frame in frames:
        yield builder.push(to_model_frame(frame, size, grayscale))


def channel_names(offsets: Sequence[int], grayscale: bool = True) -> list[str]:
    colours = ["gray"] if grayscale else ["b", "g", "r"]
    names = list(colours)
    for k in sorted(offsets):
        names += [f"{c}-diff{k}" for c in colours]
    return names
