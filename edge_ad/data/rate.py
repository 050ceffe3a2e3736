"""Frames at the model's rate: a camera at 25 or 30 frames/s scored (and trained, and calibrated) at 10.

The motion channel is the difference to the frame k steps back, and the speed map reads pixels a frame, so a
model learns the motion of the frame rate it was trained at (``scoring.assumed_fps``; UCSD's 10). Scored on
every frame of a 30 frames/s camera, a cyclist would move like a walker. One rule, used by ``edge-ad data
import``, ``edge-ad calibrate --normal`` and ``edge-ad run``: keep the first frame at or after each tick of
the model's rate. Keeping fewer frames also leaves the CPU two thirds of its time on a 30 frames/s camera.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from edge_ad.data.video import FramePacket

SAME_RATE = 1.05  # a source within 5 % of the model's rate keeps every frame (containers round their rates)


class RateGate:
    """Says, frame by frame, which frames of a ``source_fps`` stream to keep for a ``rate`` frames/s model.

    Ticks are multiples of 1/rate from the first frame kept, so after a gap the kept frames stay on one clock.
    A quarter of a source frame of slack absorbs rounding in timestamps. A source at the model's rate or
    below, or of unknown rate, keeps everything: frames cannot be made up (the caller warns).
    """

    def __init__(self, rate: float | None, source_fps: float | None) -> None:
        self.active = bool(rate and source_fps and source_fps > rate * SAME_RATE)
        self.step = 1.0 / rate if rate else 0.0
        self.slack = 0.25 / source_fps if source_fps else 0.0
        self._tick: float | None = None
        self.passed = 0  # frames not kept, over the gate's life

    def reset(self) -> None:
        """A new start (a reconnection, a looped file): the clock starts again at the next frame."""
        self._tick = None

    def keep(self, t: float) -> bool:
        """``t``: the frame's time in seconds, on any clock that does not go back."""
        if not self.active:
            return True
        if self._tick is None:
            self._tick = t
        if t + self.slack < self._tick:
            self.passed += 1
            return False
        self._tick += self.step * (math.floor((t + self.slack - self._tick) / self.step) + 1)
        return True


def resample(packets: Iterator[FramePacket], rate: float, source_fps: float) -> Iterator[FramePacket]:
    """The packets a ``rate`` frames/s model sees of a recording at ``source_fps``."""
    gate = RateGate(rate, source_fps)
    return (p for p in packets if gate.keep(p.timestamp))
