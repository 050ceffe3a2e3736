"""A synthetic UCSD-Ped-like scene: one fixed camera over a walkway, pedestrians as normal, other movers as anomalies.

Tests, the demo and the quality figures need labelled anomaly footage that anyone can regenerate offline, so
this writes exactly the UCSD layout (8-bit tif frames, 0/255 bmp masks, a ``.m`` file of frame ranges). The seed
picks the camera (walkway, lawn, fixtures, tones) and every clip's traffic; the same seed gives byte-identical
files. Anomalies differ from pedestrians the way UCSD's do: by shape (cyclist, cart, small vehicle) or by speed
alone (skater). Masks are the anomalous objects' visible pixels after occlusion by nearer objects.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.mfile import format_ranges, labels_to_ranges
from edge_ad.data.ucsd import clip_dirs, find_child
from edge_ad.errors import UserError, make_dir

MARKER = "% edge-ad synthetic scene"
GT_NAME = "UCSDsynth.m"
REFERENCE_HEIGHT = 158.0  # speeds are given in pixels of a UCSD-sized (158 px high) frame
ANOMALY_KINDS = ("cyclist", "skater", "cart", "vehicle")
# Reference speeds in px/frame at mid-image; scaled by perspective and frame size.
SPEEDS = {
    "pedestrian": (0.6, 1.6),  # UCSD Ped1 walkers: about 1 px/frame at 10 frames/s
    "cyclist": (2.5, 4.0),
    "skater": (2.0, 3.5),
    "cart": (0.6, 1.2),
    "vehicle": (1.5, 3.0),
}
SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions, so slow walkers move smoothly instead of in 1 px jumps
ONE = 1 << SHIFT


# ----------------------------------------------------------------------------------------------------------- camera


@dataclass
class Camera:
    """Everything fixed for one seed: geometry, perspective and the static background."""

    height: int
    width: int
    start: np.ndarray  # walkway centre line, first end (outside the frame)
    end: np.ndarray  # walkway centre line, other end (outside the frame)
    half_width: float  # walkway half-width at mid-image, px
    background: np.ndarray = field(repr=False)  # uint8 [H, W]

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))

    @property
    def axis(self) -> np.ndarray:
        return (self.end - self.start) / self.length

    @property
    def normal(self) -> np.ndarray:
        d = self.axis
        return np.array([-d[1], d[0]])

    def person_height(self, y: float) -> float:
        """Perspective: ~8 px at the top of a 158 px frame to ~24 px at the bottom."""
        return self.height * (0.05 + 0.10 * min(max(y / self.height, -0.2), 1.2))

    def speed_scale(self, y: float) -> float:
        return self.person_height(y) / (0.1 * REFERENCE_HEIGHT)

    def point(self, s: float, lateral: float) -> np.ndarray:
        """Ground point at arc length ``s`` along the walkway, ``lateral`` in walkway half-widths from its centre."""
        c = self.start + s * self.axis
        return c + self.normal * lateral * self.half_width * self.person_height(c[1]) / (0.1 * self.height)


def _line_through_frame(h: int, w: int, centre: np.ndarray, axis: np.ndarray) -> tuple[float, float]:
    """Arc-length interval where the line centre + t*axis lies inside the frame."""
    lo, hi = -1e9, 1e9
    for c, d, size in ((centre[0], axis[0], w), (centre[1], axis[1], h)):
        if abs(d) < 1e-9:
            continue
        t0, t1 = (0 - c) / d, (size - 1 - c) / d
        lo, hi = max(lo, min(t0, t1)), min(hi, max(t0, t1))
    return lo, hi


def _walkway_line(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre point and direction: along the image diagonal (towards the camera) or roughly horizontal."""
    if rng.random() < 0.6:
        angle = math.atan2(h, w) + rng.uniform(-0.25, 0.25)
        if rng.random() < 0.5:
            angle = math.pi - angle
        centre = np.array([w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)])
    else:
        angle = rng.uniform(-0.25, 0.25)
        centre = np.array([w * 0.5, h * rng.uniform(0.4, 0.65)])
    axis = np.array([math.cos(angle), math.sin(angle)])
    if axis[1] < 0 or (abs(axis[1]) < 1e-9 and axis[0] < 0):
        axis = -axis
    return centre, axis, np.array([-axis[1], axis[0]])


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Unit-ish noise with features about ``cell`` pixels wide (a small random grid, cubic-upsampled)."""
    gh, gw = max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def make_camera(seed: int, size: tuple[int, int]) -> Camera:
    rng = np.random.default_rng([seed, 0])
    h, w = size
    centre, axis, _ = _walkway_line(rng, h, w)
    lo, hi = _line_through_frame(h, w, centre, axis)
    half_width = h * rng.uniform(0.09, 0.16)
    probe = Camera(h, w, centre + lo * axis, centre + hi * axis, half_width, np.zeros((h, w), np.uint8))
    # Extend both ends past the frame edge so movers enter and leave fully out of view.
    a = probe.start - axis * (2.2 * probe.person_height(probe.start[1]) + half_width * 0.3)
    b = probe.end + axis * (2.2 * probe.person_height(probe.end[1]) + half_width * 0.3)
    cam = Camera(h, w, a, b, half_width, np.zeros((h, w), np.uint8))
    cam.background = _paint_background(rng, cam)
    return cam


def _walkway_polygon(cam: Camera, lateral: float) -> np.ndarray:
    s = np.linspace(0.0, cam.length, 24)
    left = [cam.point(t, -lateral) for t in s]
    right = [cam.point(t, lateral) for t in s[::-1]]
    return np.round(np.array(left + right) * ONE).astype(np.int32)


def _paint_background(rng: np.random.Generator, cam: Camera) -> np.ndarray:
    """Lawn (smooth + fine texture), bushes, a paved walkway with joints, benches and lamp posts."""
    h, w = cam.height, cam.width
    lawn_tone = rng.uniform(85, 145)
    bg = np.full((h, w), lawn_tone, np.float32)
    bg += 12 * _smooth_noise(rng, h, w, max(h, w) / 3)
    bg += 6 * _smooth_noise(rng, h, w, max(4.0, h / 20))
    grain = rng.standard_normal((h, w)).astype(np.float32)
    bg += 7 * cv2.GaussianBlur(grain, (0, 0), 0.6)
    bg += np.linspace(-8, 8, h, dtype=np.float32)[:, None] * rng.choice([-1, 1])  # light falls off across the lawn
    for _ in range(rng.integers(2, 6)):  # bushes and shrubs
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = cam.person_height(cy) * rng.uniform(0.4, 1.0)
        tone = float(lawn_tone - rng.uniform(20, 45))
        cv2.ellipse(
            bg,
            (int(cx * ONE), int(cy * ONE)),
            (int(r * 1.3 * ONE), int(r * ONE)),
            0,
            0,
            360,
            tone,
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
    path = np.zeros((h, w), np.float32)
    cv2.fillPoly(path, [_walkway_polygon(cam, 1.0)], 1.0, cv2.LINE_AA, SHIFT)
    path = cv2.GaussianBlur(path, (0, 0), 0.8)
    offset = rng.uniform(30, 60) * rng.choice([-1, 1])
    paving = np.full((h, w), np.clip(lawn_tone + offset, 25, 230), np.float32)
    paving += 4 * _smooth_noise(rng, h, w, max(4.0, h / 10))
    joint_tone = float(np.clip(lawn_tone + offset, 25, 230) - 7 * np.sign(offset))
    for s in np.arange(rng.uniform(0, 10), cam.length, rng.uniform(8, 16)):
        p, q = cam.point(s, -1.0), cam.point(s, 1.0)
        cv2.line(
            paving,
            (int(p[0] * ONE), int(p[1] * ONE)),
            (int(q[0] * ONE), int(q[1] * ONE)),
            joint_tone,
            1,
            cv2.LINE_AA,
            SHIFT,
        )
    bg = bg * (1 - path) + paving * path
    for _ in range(rng.integers(1, 4)):  # lamp posts beside the walkway
        foot = cam.point(rng.uniform(0.15, 0.85) * cam.length, rng.choice([-1, 1]) * rng.uniform(1.15, 1.6))
        ph = cam.person_height(foot[1]) * 2.2
        top = (int(foot[0] * ONE), int((foot[1] - ph) * ONE))
        cv2.line(bg, (int(foot[0] * ONE), int(foot[1] * ONE)), top, 40.0, max(1, round(ph / 40)), cv2.LINE_AA, SHIFT)
        cv2.circle(bg, top, int(ph * 0.06 * ONE) + ONE, 215.0, -1, cv2.LINE_AA, SHIFT)
    for _ in range(rng.integers(0, 3)):  # benches
        foot = cam.point(rng.uniform(0.1, 0.9) * cam.length, rng.choice([-1, 1]) * rng.uniform(1.25, 1.7))
        bh = cam.person_height(foot[1])
        x0, y0 = foot[0] - 0.6 * bh, foot[1] - 0.45 * bh
        pts = np.array([[x0, y0], [x0 + 1.2 * bh, y0], [x0 + 1.2 * bh, foot[1]], [x0, foot[1]]])
        cv2.fillConvexPoly(bg, np.round(pts * ONE).astype(np.int32), float(rng.uniform(45, 80)), cv2.LINE_AA, SHIFT)
    return np.clip(np.rint(bg), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------- movers


@dataclass
class Mover:
    """One pedestrian or anomalous object; ``track`` maps clip frame -> ground point (x, y)."""

    kind: str
    direction: int  # +1: start -> end of the walkway, -1: back
    lateral: float
    tone: float
    head_tone: float
    leg_tone: float
    phase: float
    cadence: float  # radians per frame of the walking cycle
    sway: float  # fraction of body height
    facing: int  # +1 faces right on screen
    track: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def anomalous(self) -> bool:
        return self.kind != "pedestrian"


def _simulate(cam: Camera, m: Mover, s0: float, f0: int, speed: float, frames: int) -> None:
    """Walk ``m`` along the walkway from arc length s0 at frame f0 until it leaves or the clip ends."""
    s = s0
    for f in range(f0, frames):
        if f >= 0:
            x, y = cam.point(s, m.lateral)
            m.track[f] = (float(x), float(y))
        y = (cam.start + s * cam.axis)[1]
        s += m.direction * speed * cam.speed_scale(y)
        if s < -1.0 or s > cam.length + 1.0:
            break


def _new_mover(rng: np.random.Generator, cam: Camera, kind: str, direction: int, lateral: float) -> Mover:
    dark = rng.random() < 0.6
    tone = rng.uniform(20, 85) if dark else rng.uniform(160, 235)
    dx = cam.axis[0] * direction
    facing = int(np.sign(dx)) if abs(dx) > 0.2 else int(rng.choice([-1, 1]))
    return Mover(
        kind=kind,
        direction=direction,
        lateral=lateral,
        tone=float(tone),
        head_tone=float(rng.uniform(25, 70) if rng.random() < 0.5 else rng.uniform(110, 175)),
        leg_tone=float(rng.uniform(15, 60)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        cadence=float(rng.uniform(0.25, 0.4)),
        sway=float(rng.uniform(0.02, 0.05)),
        facing=facing,
    )


def _pedestrians(rng: np.random.Generator, cam: Camera, frames: int) -> list[Mover]:
    """A slowly varying crowd of 3-12, some in small groups, walking both ways; the clip opens mid-stream."""
    movers: list[Mover] = []
    base = rng.uniform(4.0, 10.0)
    wobble = rng.uniform(0, 2 * math.pi)
    period = rng.uniform(150, 400)

    def spawn(f0: int, s_start: float | None, room: int) -> int:
        direction = int(rng.choice([-1, 1]))
        speed = rng.uniform(*SPEEDS["pedestrian"])
        size = min(room, int(rng.choice([1, 1, 1, 2, 2, 3])))
        lateral = rng.uniform(-0.75, 0.75)
        s0 = s_start if s_start is not None else (0.0 if direction > 0 else cam.length)
        for k in range(size):
            side = float(np.clip(lateral + 0.3 * k * rng.choice([-1, 1]), -0.9, 0.9))
            m = _new_mover(rng, cam, "pedestrian", direction, side)
            m.cadence = movers[-1].cadence if k else m.cadence  # a group walks in step
            _simulate(cam, m, s0 - direction * k * rng.uniform(4, 9), f0, speed, frames)
            movers.append(m)
        return size

    placed = 0
    while placed < round(base):
        placed += spawn(0, rng.uniform(0.05, 0.95) * cam.length, round(base) - placed)
    for f in range(frames):
        target = min(12.0, max(3.0, base + 2.0 * math.sin(wobble + 2 * math.pi * f / period)))
        present = sum(1 for m in movers if f in m.track)
        if present < target and rng.random() < 0.1:
            spawn(f, None, max(1, 12 - present))
    return movers


def quiet_clips(seed: int, n_test: int) -> set[int]:
    """About one test clip in five has no anomaly at all; never the first, so every scene has anomalies."""
    n_quiet = min(round(0.2 * n_test), max(n_test - 1, 0))
    order = np.random.default_rng([seed, 3]).permutation(np.arange(1, max(n_test, 1)))
    return {int(i) for i in order[:n_quiet]}


def _anomalies(rng: np.random.Generator, cam: Camera, frames: int) -> list[Mover]:
    """One or two events that enter, cross and leave, placed where the clip has none yet."""
    out: list[Mover] = []
    covered = np.zeros(frames, bool)
    for _ in range(1 if rng.random() < 0.6 else 2):
        kind = str(rng.choice(ANOMALY_KINDS))
        direction = int(rng.choice([-1, 1]))
        speed = rng.uniform(*SPEEDS[kind])
        m = _new_mover(rng, cam, kind, direction, float(rng.uniform(-0.5, 0.5)))
        probe = replace(m, track={})
        _simulate(cam, probe, 0.0 if direction > 0 else cam.length, 0, speed, 10 * frames)
        seen = [f for f, (x, y) in probe.track.items() if _visible(cam, x, y, cam.person_height(y))]
        first_seen, duration = min(seen, default=0), max(len(seen), 1)
        # Enter somewhere in the clip's still-free part, cross and leave. A crossing longer than the clip is
        # often already under way when the clip starts, so short clips still see the whole of the object.
        free = np.flatnonzero(~covered[: max(1, int(0.75 * frames))])
        entry = int(rng.choice(free)) if free.size else int(rng.integers(0, frames))
        if rng.random() < min(0.8, 0.2 * duration / frames):
            entry = -int(rng.integers(0, max(1, duration - frames // 3)))
        f0 = entry - first_seen
        _simulate(cam, m, 0.0 if direction > 0 else cam.length, f0, speed, frames)
        if m.track:
            covered[min(m.track) : max(m.track) + 1] = True
            out.append(m)
    return out


# ----------------------------------------------------------------------------------------------------------- drawing


class Canvas:
    """Draws on the frame (anti-aliased) and, when given, on the anomaly mask (hard edges, same geometry)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray | None) -> None:
        self.image, self.mask, self.value = image, mask, 0

    @staticmethod
    def _p(x: float, y: float) -> tuple[int, int]:
        return int(round(x * ONE)), int(round(y * ONE))

    def ellipse(self, x: float, y: float, ax: float, ay: float, tone: float, angle: float = 0.0) -> None:
        axes = (max(ONE // 2, int(round(ax * ONE))), max(ONE // 2, int(round(ay * ONE))))
        cv2.ellipse(self.image, self._p(x, y), axes, angle, 0, 360, tone, -1, cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.ellipse(self.mask, self._p(x, y), axes, angle, 0, 360, self.value, -1, cv2.LINE_8, SHIFT)

    def ring(self, x: float, y: float, r: float, tone: float, thickness: int) -> None:
        rr = max(ONE // 2, int(round(r * ONE)))
        cv2.circle(self.image, self._p(x, y), rr, tone, thickness, cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.circle(self.mask, self._p(x, y), rr, self.value, thickness, cv2.LINE_8, SHIFT)

    def line(self, x0: float, y0: float, x1: float, y1: float, tone: float, thickness: int) -> None:
        cv2.line(self.image, self._p(x0, y0), self._p(x1, y1), tone, thickness, cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.line(self.mask, self._p(x0, y0), self._p(x1, y1), self.value, thickness, cv2.LINE_8, SHIFT)

    def box(self, x0: float, y0: float, x1: float, y1: float, tone: float) -> None:
        pts = np.round(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * ONE).astype(np.int32)
        cv2.fillConvexPoly(self.image, pts, tone, cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.fillConvexPoly(self.mask, pts, self.value, cv2.LINE_8, SHIFT)


def _thick(h: float, fraction: float) -> int:
    return max(1, int(round(h * fraction)))


def _draw_person(c: Canvas, m: Mover, x: float, y: float, h: float, f: int, stride: float = 0.13) -> None:
    swing = math.sin(m.phase + m.cadence * f)
    x += m.sway * h * swing
    hip_y = y - 0.45 * h
    for side in (-1, 1):
        c.line(x + side * 0.04 * h, hip_y, x + side * stride * h * swing, y, m.leg_tone, _thick(h, 0.09))
    c.ellipse(x, y - 0.64 * h, 0.15 * h, 0.23 * h, m.tone)
    c.ellipse(x, y - 0.91 * h, 0.085 * h, 0.09 * h, m.head_tone)


def _draw_cyclist(c: Canvas, m: Mover, x: float, y: float, h: float, f: int) -> None:
    r, gap, sx = 0.21 * h, 0.4 * h, m.facing
    wheel_y = y - r
    for side in (-1, 1):
        c.ring(x + side * gap, wheel_y, r, 30.0, _thick(h, 0.05))
    c.line(x - gap, wheel_y, x + 0.1 * h * sx, y - 0.5 * h, 50.0, _thick(h, 0.05))
    c.line(x + gap, wheel_y, x + 0.1 * h * sx, y - 0.5 * h, 50.0, _thick(h, 0.05))
    pedal = math.sin(m.phase + 0.5 * f)
    c.line(x - 0.05 * h * sx, y - 0.55 * h, x + 0.1 * h * pedal, y - 0.2 * h, m.leg_tone, _thick(h, 0.08))
    c.ellipse(x - 0.02 * h * sx, y - 0.72 * h, 0.13 * h, 0.2 * h, m.tone, angle=20.0 * sx)
    c.ellipse(x + 0.1 * h * sx, y - 0.95 * h, 0.085 * h, 0.09 * h, m.head_tone)


def _draw_cart(c: Canvas, m: Mover, x: float, y: float, h: float, f: int) -> None:
    sx = m.facing
    _draw_person(c, m, x - 0.35 * h * sx, y, h, f)
    x0, x1 = x - 0.05 * h * sx, x + 0.6 * h * sx
    c.line(x - 0.2 * h * sx, y - 0.6 * h, x0, y - 0.55 * h, 45.0, _thick(h, 0.05))
    c.box(min(x0, x1), y - 0.58 * h, max(x0, x1), y - 0.12 * h, 255.0 - m.tone * 0.6)
    for wx in (x0 + 0.1 * h * sx, x1 - 0.1 * h * sx):
        c.ellipse(wx, y - 0.07 * h, 0.07 * h, 0.07 * h, 25.0)


def _draw_vehicle(c: Canvas, m: Mover, x: float, y: float, h: float, f: int) -> None:
    half = 0.85 * h
    c.box(x - half, y - 0.8 * h, x + half, y - 0.12 * h, m.tone)
    window = 235.0 - 0.3 * m.tone if m.tone < 128 else 40.0
    for k in range(3):
        wx0 = x - half + 0.12 * h + k * 0.53 * h
        c.box(wx0, y - 0.72 * h, wx0 + 0.4 * h, y - 0.48 * h, window)
    for side in (-1, 1):
        c.ellipse(x + side * (half - 0.25 * h), y - 0.12 * h, 0.13 * h, 0.13 * h, 20.0)


DRAW: dict[str, Callable[[Canvas, Mover, float, float, float, int], None]] = {
    "pedestrian": _draw_person,
    "skater": lambda c, m, x, y, h, f: _draw_person(c, m, x, y, h, 0, stride=0.1),
    "cyclist": _draw_cyclist,
    "cart": _draw_cart,
    "vehicle": _draw_vehicle,
}


# ----------------------------------------------------------------------------------------------------------- clips


@dataclass
class ClipResult:
    name: str
    labels: np.ndarray | None  # bool [T]; None for training clips
    events: list[str]


def _visible(cam: Camera, x: float, y: float, h: float) -> bool:
    return -1.2 * h < x < cam.width + 1.2 * h and -0.1 * h < y < cam.height + 1.1 * h


def _render_clip(cam: Camera, movers: list[Mover], frames: int, rng: np.random.Generator, with_masks: bool):
    """Yields (frame uint8 [H, W], mask bool [H, W] or None) for each frame of a clip."""
    h, w = cam.height, cam.width
    pad = 16
    bank = rng.standard_normal((8, h + pad, w + pad), dtype=np.float32) * np.float32(2.0)
    t = np.arange(frames) / max(frames - 1, 1)
    drift = rng.uniform(-2.5, 2.5) * np.sin(2 * math.pi * (t * rng.uniform(0.3, 1.0) + rng.uniform(0, 1)))
    drift += rng.uniform(-2.0, 2.0) * t
    picks = rng.integers(0, [8, pad, pad], size=(frames, 3))
    for f in range(frames):
        image = cam.background.copy()
        here = []
        for m in movers:
            if f in m.track:
                x, y = m.track[f]
                ph = cam.person_height(y)
                if _visible(cam, x, y, ph):
                    here.append((y, x, ph, m))
        here.sort(key=lambda item: item[0])  # far (top) first, so nearer movers occlude them
        mask = np.zeros((h, w), np.uint8) if with_masks and any(m.anomalous for *_, m in here) else None
        canvas = Canvas(image, mask)
        for y, x, ph, m in here:
            canvas.value = 255 if m.anomalous else 0
            DRAW[m.kind](canvas, m, x, y, ph, f)
        k, dy, dx = picks[f]
        out = cv2.GaussianBlur(image, (3, 3), 0.6).astype(np.float32)
        out += bank[k, dy : dy + h, dx : dx + w]
        out += np.float32(drift[f])
        np.rint(out, out=out)
        np.clip(out, 0, 255, out=out)
        yield out.astype(np.uint8), (mask > 0 if mask is not None else (np.zeros((h, w), bool) if with_masks else None))


def _write(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    ok, buf = cv2.imencode(path.suffix, image, params or [])
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    buf.tofile(path)


TIFF_PLAIN = [cv2.IMWRITE_TIFF_COMPRESSION, 1]  # uncompressed, like UCSD's own frames


def _make_clip(cam: Camera, out: Path, split: str, index: int, frames: int, seed: int, quiet: bool) -> ClipResult:
    test = split == "test"
    rng = np.random.default_rng([seed, 2 if test else 1, index])
    movers = _pedestrians(rng, cam, frames)
    events = _anomalies(rng, cam, frames) if test and not quiet else []
    name = f"{'Test' if test else 'Train'}{index + 1:03d}"
    folder = out / ("Test" if test else "Train") / name
    folder.mkdir(parents=True)
    mask_dir = out / "Test" / f"{name}_gt"
    if test:
        mask_dir.mkdir()
    digits = max(3, len(str(frames)))
    labels = np.zeros(frames, bool)
    for f, (image, mask) in enumerate(_render_clip(cam, movers + events, frames, rng, test)):
        _write(folder / f"{f + 1:0{digits}d}.tif", image, TIFF_PLAIN)
        if mask is not None:
            labels[f] = bool(mask.any())
            _write(mask_dir / f"{f + 1:0{digits}d}.bmp", mask.astype(np.uint8) * 255)
    return ClipResult(name, labels if test else None, [e.kind for e in events])


# ----------------------------------------------------------------------------------------------------------- scene


@dataclass
class SceneSummary:
    root: Path
    seed: int
    size: tuple[int, int]
    frames_per_clip: int
    train_clips: int
    test_clips: int
    anomalous_frames: dict[str, int]  # per test clip
    events: dict[str, list[str]]  # anomaly kinds per test clip

    @property
    def total_frames(self) -> int:
        return (self.train_clips + self.test_clips) * self.frames_per_clip

    @property
    def total_anomalous(self) -> int:
        return sum(self.anomalous_frames.values())

    @property
    def anomalous_fraction(self) -> float:
        n = self.test_clips * self.frames_per_clip
        return self.total_anomalous / n if n else 0.0

    def describe(self) -> str:
        h, w = self.size
        lines = [
            f"synthetic scene (seed {self.seed}, {h}x{w}) written to {self.root}",
            f"  train: {self.train_clips} clips x {self.frames_per_clip} frames",
            f"  test:  {self.test_clips} clips x {self.frames_per_clip} frames, {self.total_anomalous} anomalous "
            f"({100 * self.anomalous_fraction:.0f}%)",
        ]
        for name, n in self.anomalous_frames.items():
            kinds = ", ".join(self.events[name]) or "no anomaly"
            lines.append(f"    {name}: {n:4d} anomalous frames ({kinds})")
        return "\n".join(lines)


def is_synth_scene(folder: Path) -> bool:
    """A scene this command wrote and nothing since: its label file's first line says so and counts the
    clips, and the folder holds those clips and no other (footage imported into it, or another .m file,
    is a user's, which only --force replaces)."""
    gt = folder / GT_NAME
    try:
        head = gt.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0] if gt.is_file() else ""
    except OSError:
        return False
    found = re.search(r"train=(\d+) test=(\d+)", head)
    if not head.startswith(MARKER) or found is None:
        return False
    if [p.name for p in folder.glob("*.m")] != [GT_NAME]:
        return False
    n_train, n_test = (int(n) for n in found.groups())
    return (
        len(clip_dirs(find_child(folder, "Train"))) == n_train and len(clip_dirs(find_child(folder, "Test"))) == n_test
    )


def _prepare(out: Path, force: bool) -> None:
    """Only overwrite what we wrote before; a non-empty folder of anything else needs ``force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the synthetic scene")
    if out.exists() and any(out.iterdir()):
        if not (force or is_synth_scene(out)):
            raise UserError(
                f"{out} is not empty and not a previous synthetic scene; choose another folder or "
                "pass --force to replace its Train/, Test/ and *.m"
            )
        for child in out.iterdir():
            if child.is_dir() and child.name.lower() in ("train", "test"):
                shutil.rmtree(child)
            elif child.is_file() and child.suffix == ".m":
                child.unlink()
    make_dir(out / "Train", "scene folder")
    make_dir(out / "Test", "scene folder")


def _gt_text(results: list[ClipResult], seed: int, size: tuple[int, int], n_train: int, frames: int) -> str:
    head = [
        f"{MARKER}: seed={seed} size={size[0]}x{size[1]} train={n_train} test={len(results)} frames={frames}",
        "% Frame-level ground truth as in UCSDped1.m: 1-based inclusive frame ranges, one line per Test clip.",
        "% Pixel masks of the anomalous objects are in Test/TestNNN_gt/.",
        "TestVideoFile = {};",
    ]
    body = []
    for r in results:
        kinds = ", ".join(r.events) or "no anomaly"
        body.append(f"TestVideoFile{{end+1}}.gt_frame = {format_ranges(labels_to_ranges(r.labels))};  % {kinds}")
    return "\n".join(head + body) + "\n"


def validate_scene_args(n_train: int, n_test: int, frames: int, size: tuple[int, int], seed: int = 0) -> None:
    if seed < 0:
        raise UserError(f"--seed must be 0 or more, got {seed}")
    for flag, n in (("--train", n_train), ("--test", n_test)):
        if n < 0:
            raise UserError(f"{flag} must be 0 or more clips, got {n}")
    if n_train + n_test == 0:
        raise UserError("--train and --test are both 0; ask for at least one clip")
    if frames < 2:
        raise UserError(f"--frames must be at least 2, got {frames}")
    if min(size) < 32 or max(size) > 4096:
        raise UserError(f"--size {size[0]}x{size[1]} is out of range; use between 32 and 4096 pixels a side")


def make_scene(
    out: str | Path,
    n_train: int = 16,
    n_test: int = 8,
    frames: int = 200,
    seed: int = 0,
    size: tuple[int, int] = (158, 238),
    force: bool = False,
    workers: int | None = None,
) -> SceneSummary:
    """Write a UCSD-layout synthetic scene to ``out``; returns what was written."""
    out = Path(out).expanduser()
    size = (int(size[0]), int(size[1]))
    validate_scene_args(n_train, n_test, frames, size, seed)
    _prepare(out, force)
    cam = make_camera(seed, size)
    quiet = quiet_clips(seed, n_test)
    jobs = [("train", i) for i in range(n_train)] + [("test", i) for i in range(n_test)]
    with ThreadPoolExecutor(max_workers=workers or 2) as pool:
        results = list(pool.map(lambda job: _make_clip(cam, out, *job, frames, seed, job[1] in quiet), jobs))
    tests = results[n_train:]
    (out / GT_NAME).write_text(_gt_text(tests, seed, size, n_train, frames), encoding="utf-8")
    return SceneSummary(
        root=out,
        seed=seed,
        size=size,
        frames_per_clip=frames,
        train_clips=n_train,
        test_clips=n_test,
        anomalous_frames={r.name: int(r.labels.sum()) for r in tests},
        events={r.name: r.events for r in tests},
    )
