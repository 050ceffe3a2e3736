"""Frames from a video file or a folder of images, with their timestamps.

Footage from the field has damaged stretches (a dropped packet, a half-written file after a power cut). A
reader that stops at the first bad frame loses the rest of the recording, so bad frames are skipped and
counted instead; callers report ``skipped`` so the damage is visible rather than silent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.ucsd import list_images, quiet_decoders, read_image
from edge_ad.errors import UserError

DEFAULT_FPS = 25.0  # used when a file or folder does not say
MAX_BAD_RUN = 32  # this many failed reads in a row is the end of the stream, not damage


@dataclass(frozen=True)
class FramePacket:
    index: int  # frame number in the source, counting skipped frames
    timestamp: float  # seconds from the start of the source
    image: np.ndarray  # uint8 HxW or HxWx3 (BGR)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float  # 0 when the container does not say
    frame_count: int  # the container's count; may be an estimate for some formats
    width: int
    height: int
    codec: str

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def clean_rate(fps: float) -> float:
    """A container's frame rate, or 0 when it says nothing usable (0, NaN, or the 1000 some writers put
    for "unknown"): every reader treats a file's rate the same way."""
    return float(fps) if 0 < fps < 1000 else 0.0


def quiet_ffmpeg() -> None:
    """FFmpeg's own lines about a damaged file off: our one-line message says what is wrong and what to do.
    Takes effect for captures opened afterwards; a user's OPENCV_FFMPEG_LOGLEVEL (16: errors) brings them back."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _open(path: str | Path) -> tuple[Path, cv2.VideoCapture]:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"video file {p} does not exist")
    if p.is_dir():
        raise UserError(f"{p} is a folder; give a video file (or read the folder as frames)")
    with quiet_decoders():  # OpenCV's own warning on a file it cannot open would precede our one line
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened() or cap.get(cv2.CAP_PROP_FRAME_WIDTH) <= 0:
        cap.release()
        raise UserError(f"cannot open {p} as a video: not a video file or an unsupported codec")
    return p, cap


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ") if text.isprintable() else str(code)


def video_info(path: str | Path) -> VideoInfo:
    p, cap = _open(path)
    try:
        return VideoInfo(
            path=p,
            fps=clean_rate(cap.get(cv2.CAP_PROP_FPS)),
            frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            codec=_fourcc(cap),
        )
    finally:
        cap.release()


class VideoFrames:
    """Iterator over a video's decodable frames; ``skipped`` counts the damaged ones it stepped over."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path, self._cap = _open(path)
        self._file_fps = clean_rate(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps or self._file_fps or DEFAULT_FPS
        self.skipped = 0
        self._next_index = 0

    def __iter__(self) -> VideoFrames:
        return self

    def _timing(self) -> tuple[int, float]:
        """Index and time of the frame just read; the container's clock knows about frames it could not decode."""
        msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        if self._file_fps and msec > 0:
            index = max(self._next_index, round(msec / 1000.0 * self._file_fps))
        else:
            index = self._next_index
        return index, index / self.fps

    def __next__(self) -> FramePacket:
        if self._cap is None:
            raise StopIteration
        failures = 0
        while failures < MAX_BAD_RUN:
            ok, image = self._cap.read()
            if ok and image is not None and image.size:
                index, timestamp = self._timing()
                self.skipped += max(index - self._next_index, failures)
                self._next_index = index + 1
                return FramePacket(index, timestamp, image)
            failures += 1
        self.close()
        raise StopIteration

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_video(path: str | Path, fps: float | None = None) -> VideoFrames:
    """Frames of a video file. ``fps`` overrides the file's rate for timestamps (e.g. a file that lies)."""
    return VideoFrames(path, fps)


class FolderFrames:
    """Iterator over a folder of images in numeric order, timed at ``fps``; unreadable images are skipped."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise UserError(f"frame folder {p} does not exist" if not p.exists() else f"{p} is not a folder")
        self.paths = list_images(p)
        if not self.paths:
            raise UserError(f"frame folder {p} holds no images (.tif/.png/.jpg/.bmp)")
        self.path = p
        self.fps = fps or DEFAULT_FPS
        self.skipped = 0
        self._i = 0

    def __iter__(self) -> FolderFrames:
        return self

    def __next__(self) -> FramePacket:
        while self._i < len(self.paths):
            i = self._i
            self._i += 1
            try:
                image = read_image(self.paths[i])
            except UserError:
                self.skipped += 1
                continue
            return FramePacket(i, i / self.fps, image)
        raise StopIteration


def iter_folder(path: str | Path, fps: float | None = None) -> FolderFrames:
    return FolderFrames(path, fps)
