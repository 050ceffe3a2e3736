"""Frames at the model's rate: a camera at 25 or 30 frames/s scored (and trained, and calibrated) at 10.

The motion channel is the difference to the frame k steps back, and the speed map reads pixels a frame, so a
model learns the motion of the frame rate it was trained at (``scoring.assumed_fps``; UCSD's 10). Scored on
every frame of a 30 frames/s camera, a cyclist would move like a walker. One rule, used by ``edge-ad data
import``, ``edge-ad calibrate --normal`` and ``edge-ad run``: at each tick of the model's rate, keep the first
frame less than half a source frame before it or after it. Keeping fewer frames also leaves the CPU two thirds of its time on a 30
frames/s camera.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

from edge_ad.data.video import FramePacket

SAME_RATE = 1.05  # a source within 5 % of the model's rate keeps every frame (containers round their rates)
SLACK = 0.45  # of a source frame: the frame nearest a tick is kept; of two as near (25 -> 10), the later
MEASURED = 30  # live: the source's rate is measured over this many arrival intervals ...
MEASURED_MIN = 5  # ... once this many have been seen; until then every frame is kept
# Live arrivals jitter (tens of ms on a network), so a measured rate counts as faster only 20 % above the
# model's: a 10 frames/s camera is never thinned, one at 12.5 frames/s or more (cameras' usual rates) is.
LIVE_SAME_RATE = 1.2


class RateGate:
    """Says, frame by frame, which frames of a stream to keep for a ``rate`` frames/s model.

    Ticks are multiples of 1/rate from the first frame kept, so after a gap the kept frames stay on one clock.
    The slack (``SLACK`` of a source frame) keeps the frame nearest each tick, and absorbs jitter. A source at the
    model's rate or below, or of unknown rate, keeps everything: frames cannot be made up (callers warn).

    ``measure``: a live source, timed by arrival. What a camera or a stream reports as its rate is often
    wrong (FFmpeg says 25 for a stream that does not say), so the rate is measured instead: frames over
    the time they took to arrive, which holds when a network delivers them in bursts. A 10 frames/s camera
    that reports 30 is not decimated, and the ``ffmpeg`` decoder, which reports nothing, is decimated like
    OpenCV's. Until ``MEASURED_MIN`` intervals are in, every frame is kept.
    """

    def __init__(self, rate: float | None, source_fps: float | None, measure: bool = False) -> None:
        self.rate = rate
        self.step = 1.0 / rate if rate else 0.0
        self.reported = source_fps
        self.measure = measure
        self._intervals: deque[float] = deque(maxlen=MEASURED)
        self._last: float | None = None
        self._tick: float | None = None

    @property
    def source_rate(self) -> float | None:
        """Frames a second the source gives: measured when live (None until enough frames came), else as
        reported."""
        if not self.measure:
            return self.reported
        elapsed = sum(self._intervals)
        return len(self._intervals) / elapsed if len(self._intervals) >= MEASURED_MIN and elapsed > 0 else None

    @property
    def active(self) -> bool:
        return self._faster(self.source_rate)

    def _faster(self, source: float | None) -> bool:
        return bool(self.rate and source and source > self.rate * (LIVE_SAME_RATE if self.measure else SAME_RATE))

    def reset(self) -> None:
        """A new start (a reconnection, a looped file): the clock starts again at the next frame; an outage
        is not an arrival interval."""
        self._tick = self._last = None

    def keep(self, t: float) -> bool:
        """``t``: the frame's time in seconds (its position in a file, its arrival live)."""
        if self.measure and self._last is not None:
            self._intervals.append(t - self._last)
        self._last = t
        source = self.source_rate
        if not self._faster(source):
            self._tick = None
            return True
        slack = SLACK / source  # type: ignore[operator]  # faster: the rate is known
        if self._tick is None:
            self._tick = t
        if t + slack < self._tick:
            return False
        self._tick += self.step * (math.floor((t + slack - self._tick) / self.step) + 1)
        return True


def resample(packets: Iterator[FramePacket], rate: float, source_fps: float) -> Iterator[FramePacket]:
    """The packets a ``rate`` frames/s model sees of a recording at ``source_fps``."""
    gate = RateGate(rate, source_fps)
    return (p for p in packets if gate.keep(p.timestamp))
