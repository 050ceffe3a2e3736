"""Recordings into the UCSD layout: ``edge-ad data import``.

A site records its camera as video files; training, calibration and evaluation read clip folders (the layout
users of the UCSD benchmark already have, and the one our synthetic scenes are written in). Importing once,
rather than teaching every reader about containers, keeps one data reader and makes a training set a thing
you can look at, trim and copy.

Two things are decided here because the model depends on them:

* the frame rate: a camera at 25 or 30 frames/s is resampled to ``fps`` (the config's
  ``scoring.assumed_fps``; UCSD's 10), by the rule the runtime applies to live streams (``rate.py``).
* the clip boundaries: a clip never spans a stretch of damaged frames, since the difference across a gap
  would be motion that never happened.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_ad.data.footage import FootageClip, footage_clips
from edge_ad.data.rate import SAME_RATE, resample
from edge_ad.data.ucsd import clip_dirs, find_child, find_gt_file, first_decodable, list_images
from edge_ad.data.video import FramePacket, iter_video
from edge_ad.errors import UserError, make_dir

MIN_CLIP_FRAMES = 2  # a tail shorter than this has no motion to learn and is dropped


@dataclass
class ImportSummary:
    split_dir: Path
    fps: float  # the rate the clips were written at
    clips: list[str] = field(default_factory=list)
    frames: int = 0
    read: int = 0  # decoded frames, before resampling
    skipped: int = 0  # damaged frames stepped over
    dropped_tail: int = 0  # frames in tails too short to be a clip
    sources: list[tuple[str, float]] = field(default_factory=list)  # (file, its frame rate)
    label_file: Path | None = None  # test clips went into a dataset whose .m file must now list them

    def describe(self) -> str:
        fps = self.fps
        rates = sorted({f"{r:g}" for _, r in self.sources})
        lines = [
            f"wrote {_count(len(self.clips), 'clip')}, {self.frames} frames at {fps:g} frames/s "
            f"({self.frames / fps:.1f} s) to {self.split_dir}"
            + (f": {self.clips[0]} to {self.clips[-1]}" if self.clips else ""),
            f"read {self.read} frames from {_count(len(self.sources), 'recording')} at {', '.join(rates)} frames/s",
        ]
        if self.skipped:
            lines.append(f"warning: stepped over {self.skipped} damaged frames; no clip spans the gaps")
        if self.dropped_tail:
            lines.append(f"dropped {self.dropped_tail} frames in tails under {MIN_CLIP_FRAMES} frames")
        if self.label_file is not None:
            lines.append(
                f"warning: {self.label_file} lists the test clips one line each, in order: add a line for each "
                "new clip (TestVideoFile{end+1}.gt_frame = [];  for one with no anomaly), or eval and training "
                "refuse the dataset"
            )
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _recordings(sources: Sequence[Path]) -> list[FootageClip]:
    """The video files the sources name; frames are already in the layout's form and are refused."""
    found: list[FootageClip] = []
    for src in sources:
        if not src.expanduser().exists():
            raise UserError(f"recording {src} does not exist; give video files or folders of them")
        clips = footage_clips(src)
        frames = [c for c in clips if c.kind == "frames"]
        if frames:
            raise UserError(
                f"{frames[0].path} is a folder of frames, already in the layout's form: copy it into "
                "ROOT/Train/ (or Test/) as a clip folder; import reads video files"
            )
        found += clips
    return found


def _check_numbers(fps: float, clip_seconds: float, source_fps: float | None, size: tuple[int, int] | None) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise UserError(f"--fps {fps:g} is not a frame rate; give a positive number (the config's assumed_fps)")
    if not (math.isfinite(clip_seconds) and clip_seconds >= 1):
        raise UserError(f"--clip-seconds {clip_seconds:g}: give 1 s or more (UCSD's clips are 20 s)")
    if round(clip_seconds * fps) < MIN_CLIP_FRAMES:
        raise UserError(f"--clip-seconds {clip_seconds:g} at --fps {fps:g} is under {MIN_CLIP_FRAMES} frames a clip")
    if source_fps is not None and not (math.isfinite(source_fps) and source_fps > 0):
        raise UserError(f"--source-fps {source_fps:g} is not a frame rate; give a positive number")
    if size is not None and min(size) < 1:
        raise UserError(f"--size {size[0]}x{size[1]}: both sides must be at least 1 px")


def _source_rate(rec: FootageClip, fps: float, source_fps: float | None) -> float:
    """The recording's rate, refused when unknown or below the model's: frames cannot be made up."""
    rate = source_fps or rec.fps
    if rate <= 0:
        raise UserError(f"{rec.path} does not say its frame rate; give it with --source-fps")
    if rate < fps / SAME_RATE:
        raise UserError(
            f"{rec.path} runs at {rate:g} frames/s, below --fps {fps:g}: import at --fps {rate:g} and "
            f"train with --set scoring.assumed_fps={rate:g} (frames cannot be made up)"
        )
    return rate


def _camera_size(root: Path) -> tuple[int, int] | None:
    """The frame size of the clips already in the dataset (one camera, one size), or None if it has none."""
    for name in ("Train", "Test"):
        folder = find_child(root, name) if root.is_dir() else None
        for clip in clip_dirs(folder):
            if (first := first_decodable(list_images(clip))) is not None:
                return first.shape[:2]  # type: ignore[return-value]
    return None


def _unbroken(packets: Iterator[FramePacket]) -> Iterator[list[FramePacket]]:
    """Runs of consecutive source frames: a damaged stretch in between ends a run."""
    run: list[FramePacket] = []
    for p in packets:
        if run and p.index != run[-1].index + 1:
            yield run
            run = []
        run.append(p)
    if run:
        yield run


def _clips(packets: Iterator[FramePacket], fps: float, rate: float, clip_frames: int) -> Iterator[list[FramePacket]]:
    """Each unbroken run resampled to ``fps`` on a clock of its own, cut into clips of ``clip_frames``."""
    for run in _unbroken(packets):
        kept = list(resample(iter(run), fps, rate))
        for i in range(0, len(kept), clip_frames):
            yield kept[i : i + clip_frames]


def _next_number(split_dir: Path, prefix: str) -> int:
    try:
        names = [d.name[len(prefix) :] for d in clip_dirs(split_dir)]
    except OSError as e:
        raise UserError(f"cannot list {split_dir}: {e.strerror or e}; check its permissions") from None
    return max((int(n) for n in names if n.isdigit()), default=0) + 1


def _write_frame(path: Path, image: np.ndarray, size: tuple[int, int] | None) -> None:
    if size is not None and image.shape[:2] != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode frame {path.name}: the decoded image is not a picture")
    try:
        data.tofile(path)  # tofile: non-ASCII paths work, as in read_image
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; free space or choose another --out") from None


def _write_clip(clip: Path, run: list[FramePacket], size: tuple[int, int] | None) -> None:
    """Frames go into a hidden folder (which every reader skips) renamed to the clip when the last is
    written: an interrupted import leaves no half clip that a later one would number past and keep."""
    partial = clip.with_name(f".{clip.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    make_dir(partial, "clip folder")
    try:
        for i, p in enumerate(run, start=1):
            _write_frame(partial / f"{i:03d}.png", p.image, size)
        partial.rename(clip)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def import_recordings(
    sources: Sequence[str | Path],
    out: str | Path,
    split: Literal["train", "test"] = "train",
    fps: float = 10.0,
    clip_seconds: float = 20.0,
    size: tuple[int, int] | None = None,
    source_fps: float | None = None,
) -> ImportSummary:
    """Write each recording's frames, resampled to ``fps``, as clips of ``clip_seconds`` under ``out``'s
    ``Train/`` (or ``Test/``), numbered after the clips already there: more normal footage can be added.
    Every recording is checked (rate, frame size) before the first frame is written."""
    _check_numbers(fps, clip_seconds, source_fps, size)
    recordings = _recordings([Path(s) for s in sources])
    rates = [_source_rate(rec, fps, source_fps) for rec in recordings]
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a dataset folder (it is made if missing)")
    camera, seen_in = _camera_size(root), f"{root}'s clips are"
    for rec in recordings:
        shape = size or (rec.height, rec.width)
        if camera is None:
            camera, seen_in = shape, f"{rec.path} is"
        elif shape != camera:
            raise UserError(
                f"{rec.path} gives {shape[1]}x{shape[0]} frames but {seen_in} {camera[1]}x{camera[0]}: one "
                f"dataset is one camera; import into another --out, or give --size {camera[0]}x{camera[1]}"
            )
    name = "Train" if split == "train" else "Test"
    split_dir = (find_child(root, name) if root.is_dir() else None) or root / name
    make_dir(split_dir, "dataset folder")
    number = _next_number(split_dir, name)
    clip_frames = round(clip_seconds * fps)
    summary = ImportSummary(split_dir, fps)
    for rec, rate in zip(recordings, rates, strict=True):
        summary.sources.append((rec.path.name, rate))
        with iter_video(rec.path, source_fps) as stream:
            for run in _clips(_counting(stream, summary), fps, rate, clip_frames):
                if len(run) < MIN_CLIP_FRAMES:
                    summary.dropped_tail += len(run)
                    continue
                clip = split_dir / f"{name}{number:03d}"
                number += 1
                _write_clip(clip, run, size)
                summary.clips.append(clip.name)
                summary.frames += len(run)
            summary.skipped += stream.skipped
    if not summary.clips:
        raise UserError(f"no clip was written: the recordings hold fewer than {MIN_CLIP_FRAMES} decodable frames")
    if split == "test":
        summary.label_file = find_gt_file(root, split_dir)
    return summary


def _counting(stream: Iterator[FramePacket], summary: ImportSummary) -> Iterator[FramePacket]:
    for p in stream:
        summary.read += 1
        yield p
