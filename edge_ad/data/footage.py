"""Normal footage named by a path, for calibration: a video file, a folder of frames, or a folder of either.

A run holds out a few normal clips for calibration, which is seldom enough to see a false-alarm budget of one
an hour, or the crowd levels a camera sees over a day. An operator records more normal footage after training
and points ``edge-ad calibrate --normal`` at it; this module says what such a path holds and streams its
frames, so an hour-long video never has to sit in memory at full resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edge_ad.data.ucsd import list_images, natural_key
from edge_ad.data.video import iter_folder, iter_video, video_info
from edge_ad.errors import UserError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".ts", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class FootageClip:
    path: Path
    kind: Literal["video", "frames"]
    length: int  # frames; a video container's count may be an estimate

    def frames(self) -> Iterator[np.ndarray]:
        """The clip's frames in order; unreadable frames are skipped, as everywhere footage is read."""
        if self.kind == "frames":
            yield from (p.image for p in iter_folder(self.path))
            return
        with iter_video(self.path) as video:
            yield from (p.image for p in video)


def _video(path: Path) -> FootageClip:
    return FootageClip(path, "video", video_info(path).frame_count)


def footage_clips(path: str | Path) -> list[FootageClip]:
    """The clips a path holds: itself (a video file or a folder of frames), or each video file and frame
    folder directly inside it (a UCSD ``Train/`` folder, a day of recordings)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"normal footage {p} does not exist; give a video file or a folder of frames")
    if p.is_file():
        return [_video(p)]
    images = list_images(p)
    if images:
        return [FootageClip(p, "frames", len(images))]
    clips = []
    for child in sorted(p.iterdir(), key=lambda c: natural_key(c.name)):
        if child.is_file() and child.suffix.lower() in VIDEO_EXTENSIONS:
            clips.append(_video(child))
        elif child.is_dir() and (n := len(list_images(child))):
            clips.append(FootageClip(child, "frames", n))
    if not clips:
        raise UserError(f"{p} holds no frames, frame folders or video files; give normal footage of the camera")
    return clips
