"""Frames from a video file or a folder of images, with their timestamps.

Footage from the field has damaged stretches (a dropped packet, a half-written file after a power cut). A
reader that stops at the first bad frame loses the rest of the recording, so bad frames are skipped and
counted instead; callers report ``skipped`` so the damage is visible rather than silent.
"""

from __future__ import annotations

import os
from collections import deque
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


class TimestampGaps:
    """Frames a demuxer dropped without a word (a damaged stretch of a transport stream), told by the
    timestamps of the frames read: a step of at least 1.8 times the steady step before it (the last 8 steps
    within 20 % of each other) hides ``round(step / steady) - 1`` frames. Two such steps in a row are a
    drop of the rate, not a loss (a variable-rate recording; it costs the one frame counted at the first),
    and become the steady step. Relative steps, not the container's average rate: a variable-rate file or
    a header's 10.033 frames/s would otherwise read as a loss every few frames."""

    def __init__(self) -> None:
        self._last_ms: float | None = None
        self._steps: deque[float] = deque(maxlen=8)
        self._gap_before = False

    def missed(self, ms: float) -> int:
        """Frames lost just before the frame at ``ms`` (its timestamp, in milliseconds)."""
        last, self._last_ms = self._last_ms, ms
        if last is None or ms <= last:
            return 0
        step, steps = ms - last, self._steps
        if len(steps) == steps.maxlen and max(steps) <= 1.2 * min(steps):
            typical = float(np.median(steps))
            if step >= 1.8 * typical:
                if self._gap_before:
                    steps.clear()
                    steps.append(step)
                    self._gap_before = False
                    return 0
                self._gap_before = True
                return round(step / typical) - 1  # a gap's step is not the file's: the steady steps stay
        self._gap_before = False
        steps.append(step)
        return 0


class VideoFrames:
    """Iterator over a video's decodable frames; ``skipped`` counts the damaged ones it stepped over."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path, self._cap = _open(path)
        self._file_fps = clean_rate(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps or self._file_fps or DEFAULT_FPS
        self.skipped = 0
        self._next_index = 0
        self._gaps = TimestampGaps()

    def __iter__(self) -> VideoFrames:
        return self

    def _timing(self, failures: int) -> tuple[int, float]:
        """Index and time of the frame just read: after the frames that failed to decode, and those the
        container's clock says it lost (``TimestampGaps``)."""
        lost = self._gaps.missed(float(self._cap.get(cv2.CAP_PROP_POS_MSEC)))
        index = self._next_index + max(lost, failures)
        return index, index / self.fps

    def __next__(self) -> FramePacket:
        if self._cap is None:
            raise StopIteration
        failures = 0
        while failures < MAX_BAD_RUN:
            ok, image = self._cap.read()
            if ok and image is not None and image.size:
                index, timestamp = self._timing(failures)
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
