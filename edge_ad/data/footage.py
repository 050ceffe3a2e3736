"""Normal footage named by a path, for calibration: a video file, a folder of frames, or a folder of either.

A run holds out a few normal clips for calibration, which is seldom enough to see a false-alarm budget of one
an hour, or the crowd levels a camera sees over a day. An operator records more normal footage after training
and points ``edge-ad calibrate --normal`` at it; this module says what such a path holds and opens its clips
as streams, so an hour-long video never has to sit in memory at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_ad.data.ucsd import IMAGE_EXTENSIONS, clip_dirs, first_decodable, is_visible, list_images, natural_key
from edge_ad.data.video import FolderFrames, VideoFrames, iter_folder, iter_video, video_info
from edge_ad.errors import UserError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".ts", ".mpg", ".mpeg", ".h264", ".h265", ".flv", ".wmv"}
)


@dataclass(frozen=True)
class FootageClip:
    """One recording: where it is, and what it says of itself before a frame is decoded."""

    path: Path  # resolved: compared with the run's own clip folders
    kind: Literal["video", "frames"]
    length: int  # frames; a video container's count may be an estimate, or 0
    fps: float  # 0 when unknown (a folder of frames)
    width: int
    height: int
    frames: tuple[Path, ...] = ()  # a folder's frame files, in order (a copy of a known clip has its files)

    def open(self) -> VideoFrames | FolderFrames:
        """Its frames as a stream; ``skipped`` counts the damaged ones afterwards."""
        return iter_video(self.path) if self.kind == "video" else iter_folder(self.path)


def _video(path: Path) -> FootageClip:
    info = video_info(path)
    return FootageClip(path.resolve(), "video", info.frame_count, info.fps, info.width, info.height)


def _frames(folder: Path, images: list[Path]) -> FootageClip:
    first = first_decodable(images)
    if first is None:
        raise UserError(f"no frame of {folder} decodes: its files are damaged; replace them or leave the folder out")
    return FootageClip(folder.resolve(), "frames", len(images), 0.0, first.shape[1], first.shape[0], tuple(images))


def footage_clips(path: str | Path) -> list[FootageClip]:
    """The clips a path holds: itself (a video file or a folder of frames), or each video file and frame
    folder directly inside it (a UCSD ``Train/`` folder, a day of recordings; hidden entries and ``*_gt``
    mask folders are not footage)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"normal footage {p} does not exist; give a video file or a folder of frames")
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            raise UserError(f"{p} is one image; give the folder of frames it belongs to")
        return [_video(p)]
    if not p.is_dir():
        raise UserError(f"{p} is neither a file nor a folder (a device or a pipe?); give a recording or its frames")
    if p.name.lower().endswith("_gt"):
        raise UserError(f"{p} is a folder of ground-truth masks, not footage; give the clip's frames or a video")
    images = list_images(p)
    videos = [c for c in p.iterdir() if c.is_file() and is_visible(c) and c.suffix.lower() in VIDEO_EXTENSIONS]
    folders = [(d, found) for d in clip_dirs(p) if (found := list_images(d))]
    if images and (videos or folders):
        raise UserError(f"{p} mixes frames with clip folders or videos; give the frames or the clips, not both")
    if images:
        return [_frames(p, images)]
    clips = [_video(v) for v in videos] + [_frames(d, found) for d, found in folders]
    if not clips:
        kinds = " ".join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))
        if (train := next((d for d in p.iterdir() if d.is_dir() and d.name.lower() == "train"), None)) is not None:
            raise UserError(f"{p} is a dataset root; give its normal clips: --normal {train}")
        raise UserError(f"{p} holds no footage: no frames, frame folders or video files ({kinds})")
    return sorted(clips, key=lambda c: natural_key(c.path.name))
