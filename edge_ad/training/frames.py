"""Turn a UCSD-layout folder into model-ready tensors, split into training and validation clips.

The validation split is by clip, never by frame: neighbouring frames are near-duplicates, and a frame split
would let validation (and later the calibration of alert thresholds) see what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_ad.config import Config
from edge_ad.data.preprocess import model_channels
from edge_ad.data.ucsd import Clip
from edge_ad.errors import UserError


@dataclass
class ClipTensor:
    name: str
    frames: np.ndarray  # float16 [T, C, H, W], channels as the model sees them


def clip_tensor(clip: Clip, cfg: Config) -> ClipTensor:
    d = cfg.data
    channels = model_channels(clip.load_frames(), d.size, d.grayscale, d.temporal_offsets)
    return ClipTensor(clip.name, np.stack([c.astype(np.float16) for c in channels]))


def check_frame_sizes(clips: list[Clip]) -> None:
    """One camera, one frame size: mixed sizes mean mixed cameras, which one model cannot learn."""
    shapes: dict[tuple[int, ...], str] = {}
    for c in clips:
        shape = c.first_frame().shape
        shapes.setdefault(shape, c.name)
    if len(shapes) > 1:
        seen = ", ".join(f"{name}: {'x'.join(map(str, s))}" for s, name in shapes.items())
        raise UserError(f"training clips have mixed frame sizes ({seen}); train one model per camera")


def split_clips(clips: list[Clip], val_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    if not clips:
        raise UserError("no training clips: expected Train/TrainNNN folders with frames of normal footage")
    if len(clips) == 1:
        return clips, []
    n_val = max(1, round(len(clips) * val_fraction))
    n_val = min(n_val, len(clips) - 1)
    order = np.random.default_rng(seed).permutation(len(clips))
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(clips) if i not in val_idx]
    val = [c for i, c in enumerate(clips) if i in val_idx]
    return train, val


def stack(tensors: list[ClipTensor], stride: int = 1, limit: int | None = None) -> np.ndarray:
    if not tensors:
        return np.zeros((0,), np.float16)
    x = np.concatenate([t.frames[::stride] for t in tensors])
    if limit is not None and len(x) > limit:
        keep = np.linspace(0, len(x) - 1, limit).round().astype(int)
        x = x[keep]
    return x
