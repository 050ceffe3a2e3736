"""Where frames come from: cameras, stream URLs, video files and UCSD-style frame folders.

A *reader* is one open connection to a source. A ``Capture`` drives a reader for one named stream: live
sources (cameras, URLs, GStreamer pipelines) reconnect with exponential backoff after an error or a stall
and never end on their own; files and frame folders are paced (realtime or as fast as possible), may loop,
and skip the frames they cannot decode. Problems the user can fix before the run starts (a missing file,
a camera device that does not exist, an unsupported URL) are ``UserError``s raised by ``make_reader``.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_ad.config import StreamConfig
from edge_ad.data.rate import RateGate
from edge_ad.data.ucsd import IMAGE_EXTENSIONS, list_images, name_list, quiet_decoders, read_image
from edge_ad.data.video import TimestampGaps, clean_rate
from edge_ad.errors import UserError

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")
FRAMES_DEFAULT_FPS = 10.0  # UCSD Ped1/Ped2 were filmed at 10 frames/s
# Containers that store their video's frame count, so that a file ending short of it was cut short.
COUNTED_CONTAINERS = {".avi", ".mp4", ".m4v", ".mov"}
MAX_CORRUPT_RUN = 25  # this many undecodable frames in a row end a file: the rest is not video
# Connecting to a stream includes FFmpeg probing a second or two of it; only later frames get the watchdog.
OPEN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Frame:
    stream: str
    index: int  # position in the file for replays (skipped frames keep their number); a counter for live
    ts_capture: float  # wall-clock time.time() when the frame was read
    image: np.ndarray


class SourceError(Exception):
    """A live source failed to open, stopped, or stalled; the capture loop reconnects."""


class Reader(ABC):
    live: bool = False
    fps: float | None = None
    # Undecodable frames a file reader passed over just before the frame it returned (counted, not hidden).
    skipped: int = 0
    skip_reason: str = ""

    @abstractmethod
    def open(self) -> None:
        """Connect; raises SourceError for a live source that is not there (yet)."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame; None at the end of a file. Raises SourceError when a live source fails."""

    def close(self) -> None:
        return None

    @property
    def position(self) -> int:
        """Number of the frame the last read returned, within the file (files only)."""
        return -1


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    return re.search(r"GStreamer:\s+YES", info) is not None


class OpenCVReader(Reader):
    """cv2.VideoCapture for cameras (V4L2), URLs and files (FFmpeg) and GStreamer pipelines."""

    def __init__(
        self,
        target: int | str,
        api: int,
        live: bool,
        label: str,
        stall_s: float | None = None,
        fps: float | None = None,
    ):
        self.target = target
        self.api = api
        self.live = live
        self.label = label
        self.stall_s = stall_s
        self._fps = fps  # the user's rate for a file whose container is wrong or silent
        self._cap: cv2.VideoCapture | None = None
        self._count = 0
        self._pos = 0
        self._last_good = -1
        self._gaps = TimestampGaps()

    def open(self) -> None:
        params: list[int] = []
        if self.stall_s is not None:
            open_ms = int(max(self.stall_s, OPEN_TIMEOUT_S) * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.stall_s * 1000)]
        cap = cv2.VideoCapture(self.target, self.api, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.label}")
        self._cap = cap
        self.fps = self._fps or clean_rate(cap.get(cv2.CAP_PROP_FPS)) or None
        self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self._pos = 0
        self._last_good = -1
        self._gaps = TimestampGaps()

    def read(self) -> np.ndarray | None:
        assert self._cap is not None, "read before open"
        failed = 0
        while True:
            ok, image = self._cap.read()
            self._pos += 1
            if ok and image is not None:
                failed += self._catch_up_by_time()
                self.skipped = failed
                if failed:
                    self.skip_reason = f"{self.label}: {failed} frame(s) before frame {self._pos - 1} undecodable"
                self._last_good = self._pos - 1
                return image
            if self.live:
                raise SourceError(f"no frame from {self.label}")
            # FFmpeg says "no frame" both at the end and at a broken packet; only a frame after the failures
            # proves they were corrupt frames rather than the end of the file.
            failed += 1
            if self._pos >= self._count or failed >= MAX_CORRUPT_RUN:
                self._end_of_file()
                return None

    def _catch_up_by_time(self) -> int:
        """Frames the demuxer dropped without a word, read off the frame's timestamp (``TimestampGaps``): the
        position moves past them, so later frames keep their number and the loss is counted."""
        if self.live or self._cap is None:
            return 0
        missed = self._gaps.missed(float(self._cap.get(cv2.CAP_PROP_POS_MSEC)))
        self._pos += missed
        return missed

    def _end_of_file(self) -> None:
        """A file that ends before the frames its header declares was cut short (a copy interrupted, a
        recorder killed): count what is missing. Only containers that store the count (AVI, MP4, MOV): for
        the others OpenCV estimates it from a duration that may include a longer audio track. A stored
        count can still be one off, so a shortfall of one is let pass."""
        missing = self._count - (self._last_good + 1)
        stored = Path(str(self.target)).suffix.lower() in COUNTED_CONTAINERS
        self.skipped = missing if stored and missing > 1 else 0
        if self.skipped:
            self.skip_reason = (
                f"{self.label}: the file ends after frame {self._last_good} of the {self._count} it declares "
                f"(cut short?); {missing} frame(s) missing"
            )

    @property
    def position(self) -> int:
        """Number of the frame the last read returned, counting undecodable frames."""
        return self._pos - 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FramesReader(Reader):
    """A folder of numbered images, e.g. UCSD's Test001/001.tif ... 200.tif."""

    def __init__(self, folder: Path, fps: float):
        self.folder = folder
        self.fps = fps
        self.files = list_images(folder)  # the dataset reader's listing: numeric order, hidden files skipped
        self._next = 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> np.ndarray | None:
        bad: list[str] = []
        image = None
        while image is None and self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                with quiet_decoders():
                    image = read_image(path)  # as training and eval decode it
            except UserError:  # damaged, or gone since the listing: counted, the replay goes on
                bad.append(path.name)
        self.skipped = len(bad)
        if bad:
            self.skip_reason = _could_not_decode(self.folder, bad)
        return image

    @property
    def position(self) -> int:
        return self._next - 1


def _could_not_decode(folder: Path, names: list[str]) -> str:
    return f"{folder}: {name_list(names)} could not be decoded"


_PNM_HEADER = re.compile(rb"^(P[56])\s+(\d+)\s+(\d+)\s+(\d+)\s")


class FfmpegReader(Reader):
    """An ``ffmpeg`` subprocess decoding a URL to raw PGM/PPM frames on a pipe.

    Each frame carries its own small header, so no probe is needed (a probe would take the only connection
    of a one-client server). ``open`` returns once the first frame is there, so a connection counts as made
    only when video flows; after that a read waits at most ``stall_s``: the watchdog for this decoder.
    """

    live = True

    def __init__(
        self,
        url: str,
        grayscale: bool,
        stall_s: float,
        hwaccel: str | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ):
        self.url = url
        self.grayscale = grayscale
        self.stall_s = stall_s
        self.open_timeout_s = max(stall_s, open_timeout_s)
        self.hwaccel = hwaccel
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self._buf = bytearray()
        self._first: np.ndarray | None = None

    def command(self) -> list[str]:
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
        if self.hwaccel:
            cmd += ["-hwaccel", self.hwaccel]
        if self.url.startswith(("rtsp://", "rtsps://")):
            cmd += ["-rtsp_transport", "tcp"]
        codec, pix = ("pgm", "gray") if self.grayscale else ("ppm", "rgb24")
        return cmd + ["-i", self.url, "-an", "-f", "image2pipe", "-c:v", codec, "-pix_fmt", pix, "pipe:1"]

    def open(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process; closed in close())
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )
        self._buf = bytearray()
        try:
            self._first = self._frame(self.open_timeout_s)
        except SourceError:
            self.close()
            raise

    def _stderr_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def _fill(self, n: int, timeout_s: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None, "read before open"
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0.0))[0] if left > 0 else []
            if not ready:
                raise SourceError(f"no frame from {self.url} for {timeout_s:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._proc.wait(timeout=2)
                detail = self._stderr_tail()
                raise SourceError(f"ffmpeg stopped reading {self.url}" + (f": {detail}" if detail else ""))
            self._buf += chunk

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._frame(self.stall_s)

    def _frame(self, timeout_s: float) -> np.ndarray:
        while True:
            match = _PNM_HEADER.match(self._buf)
            if match:
                break
            if len(self._buf) > 64:
                raise SourceError(f"ffmpeg sent something that is not a PGM/PPM frame for {self.url}")
            self._fill(len(self._buf) + 1, timeout_s)
        magic, w, h, maxval = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        channels = 1 if magic == b"P5" else 3
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        size = w * h * channels * np.dtype(dtype).itemsize
        start = match.end()
        self._fill(start + size, timeout_s)
        data = np.frombuffer(bytes(self._buf[start : start + size]), dtype=dtype)
        del self._buf[: start + size]
        image = data.reshape(h, w) if channels == 1 else data.reshape(h, w, 3)[:, :, ::-1]
        return np.ascontiguousarray(image)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=0.5)  # ffmpeg blocked in open() ignores SIGTERM
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _camera_target(source: str) -> int | str:
    """A camera index ("0") or a device path ("/dev/video2"); refuses a device that clearly is not there."""
    target: int | str = int(source) if source.isdigit() else source
    device = Path(f"/dev/video{target}") if isinstance(target, int) else Path(target)
    if sys.platform.startswith("linux") and not device.exists():
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        have = ", ".join(present) if present else "none"
        raise UserError(f"camera {source}: {device} does not exist (cameras on this machine: {have})")
    if sys.platform.startswith("linux") and not _is_video_device(device):
        raise UserError(
            f"camera {source}: {device} is not a video device, so it would be retried for ever; give a camera "
            "(/dev/videoN or its index), or a file with --video"
        )
    return target


# Linux gives every video4linux device this major number (cameras, capture cards, v4l2loopback).
V4L_MAJOR = 81


def _is_video_device(device: Path) -> bool:
    try:
        st = device.stat()
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == V4L_MAJOR


def make_reader(stream: StreamConfig, grayscale: bool, stall_s: float) -> Reader:
    """The reader for one configured stream, after the checks a user can act on before anything starts."""
    kind, src = stream.kind, stream.source
    if kind == "camera":
        # OpenCV's V4L2 backend waits this long (seconds, read once per process) for a frame before a read fails:
        # the camera watchdog. Its default is 10 s.
        os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, round(stall_s))))
        return OpenCVReader(_camera_target(src), cv2.CAP_V4L2, live=True, label=f"camera {src}")
    if kind == "url":
        scheme = src.split("://", 1)[0].lower() if "://" in src else ""
        if scheme not in URL_SCHEMES:
            raise UserError(f"unsupported URL '{src}': expected one of {', '.join(s + '://' for s in URL_SCHEMES)}")
        if stream.decoder == "ffmpeg":
            if shutil.which("ffmpeg") is None:
                raise UserError("--decoder ffmpeg needs the ffmpeg program on PATH (apt-get install ffmpeg)")
            return FfmpegReader(src, grayscale, stall_s, stream.hwaccel)
        return OpenCVReader(src, cv2.CAP_FFMPEG, live=True, label=src, stall_s=stall_s)
    if kind == "gstreamer":
        if not gstreamer_available():
            raise UserError(
                "this OpenCV has no GStreamer support (the PyPI wheels are built without it); "
                "use --url with the FFmpeg backend, or build OpenCV with GStreamer"
            )
        return OpenCVReader(src, cv2.CAP_GSTREAMER, live=True, label="GStreamer pipeline", stall_s=stall_s)
    if kind == "video":
        return _video_reader(Path(src), stream.fps)
    if kind == "frames":
        return _frames_reader(Path(src), stream.fps or FRAMES_DEFAULT_FPS)
    raise UserError(f"unknown source kind '{kind}'")


def _video_reader(path: Path, fps: float | None = None) -> OpenCVReader:
    if path.is_dir():
        raise UserError(f"{path} is a folder; --video takes a video file (a folder of frames is --frames)")
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    reader = OpenCVReader(str(path), cv2.CAP_FFMPEG, live=False, label=str(path), fps=fps)
    try:
        reader.open()
    except SourceError:
        raise UserError(f"{path}: not a video OpenCV can decode (try converting it with ffmpeg)") from None
    finally:
        reader.close()
    return reader


def _frames_reader(folder: Path, fps: float) -> FramesReader:
    if folder.is_file():
        raise UserError(f"{folder} is a file; --frames takes a folder of numbered frames (a video file is --video)")
    if not folder.is_dir():
        raise UserError(f"frames folder not found: {folder}")
    reader = FramesReader(folder, fps)
    if not reader.files:
        clips = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if clips:
            raise UserError(f"{folder} holds folders, not frames: pass one clip, e.g. {folder / clips[0]}")
        raise UserError(f"no frames in {folder} (expected image files: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return reader


class CaptureEvents(Protocol):
    """What a capture loop reports; the pipeline turns it into status, metrics and history resets."""

    def connected(self, stream: str) -> None: ...

    def disconnected(self, stream: str, reason: str) -> None: ...

    def reconnecting(self, stream: str) -> None: ...

    def corrupt(self, stream: str, count: int, reason: str) -> None: ...

    def decimated(self, stream: str) -> None: ...


class Capture:
    """Drives one reader for one stream until it ends, ``max_frames`` are read, or ``stop`` is set.

    ``connected`` is reported at every (re)connection and at every restart of a looped file: the frames
    before it are not the past of the frames after it, so the stream's temporal history must start over.
    ``rate`` is the model's frame rate: a faster source gives the frames at that rate (``RateGate``), the
    others are reported as ``decimated``; replays are timed by frame position, live sources by the clock.
    """

    def __init__(
        self,
        stream: str,
        reader: Reader,
        events: CaptureEvents,
        stop: threading.Event,
        *,
        pace: str = "realtime",
        loop: bool = False,
        max_frames: int | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        rate: float | None = None,
    ):
        self.stream = stream
        self.reader = reader
        self.events = events
        self.stop = stop
        self.pace = pace
        self.loop = loop
        self.max_frames = max_frames
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.read_seconds = 0.0  # time the last read took: the "capture" stage
        self.rate = rate
        self.gate = RateGate(None, None)  # made when the source is open and says its rate
        self._emitted = 0

    def frames(self) -> Iterator[Frame]:
        return self._live() if self.reader.live else self._replay()

    def _done(self) -> bool:
        return self.stop.is_set() or (self.max_frames is not None and self._emitted >= self.max_frames)

    def _read(self) -> np.ndarray | None:
        t0 = time.perf_counter()
        try:
            return self.reader.read()
        finally:
            self.read_seconds = time.perf_counter() - t0

    def _live(self) -> Iterator[Frame]:
        delay = self.reconnect_initial_s
        first = True
        while not self._done():
            if not first:
                self.events.reconnecting(self.stream)
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, self.reconnect_max_s)
            first = False
            try:
                self.reader.open()
            except SourceError as e:
                self.events.disconnected(self.stream, str(e))
                continue
            self.events.connected(self.stream)
            if not self.gate.measure:  # the first connection; after a reconnection the measured rate still holds
                self.gate = RateGate(self.rate, None, measure=True)
            self.gate.reset()
            try:
                while not self._done():
                    image = self._read()
                    if image is None:
                        raise SourceError(f"{self.stream}: the stream ended")
                    delay = self.reconnect_initial_s  # a frame arrived: the connection is good again
                    if not self.gate.keep(time.monotonic()):
                        self.events.decimated(self.stream)
                        continue
                    yield self._frame(self._emitted, image)
            except SourceError as e:
                self.events.disconnected(self.stream, str(e))
            finally:
                self.reader.close()

    def _replay(self) -> Iterator[Frame]:
        fps = self.reader.fps or 25.0
        offset = 0  # frames in the earlier passes of a looped file, so numbers keep growing
        try:
            self.reader.open()
            self.events.connected(self.stream)
            self.gate = RateGate(self.rate, self.reader.fps)  # a file that does not say its rate keeps all
            t0, last = time.monotonic(), -1
            while not self._done():
                try:
                    image = self._read()
                except SourceError as e:
                    self.events.disconnected(self.stream, str(e))
                    return
                if self.reader.skipped:
                    self.events.corrupt(self.stream, self.reader.skipped, self.reader.skip_reason)
                if image is None:
                    if not (self.loop and last >= 0):
                        return
                    offset += last + 1
                    self.reader.close()
                    self.reader.open()
                    self.events.connected(self.stream)
                    self.gate.reset()
                    t0, last = time.monotonic(), -1
                    continue
                last = self.reader.position
                if not self.gate.keep(last / fps):
                    self.events.decimated(self.stream)
                    continue
                if self.pace == "realtime":
                    wait = t0 + last / fps - time.monotonic()
                    if wait > 0 and self.stop.wait(wait):
                        return
                yield self._frame(offset + last, image)
        finally:
            self.reader.close()

    def _frame(self, index: int, image: np.ndarray) -> Frame:
        self._emitted += 1
        return Frame(self.stream, index, time.time(), image)
