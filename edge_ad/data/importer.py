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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_ad.data.footage import FootageClip, footage_clips
from edge_ad.data.rate import resample
from edge_ad.data.ucsd import clip_dirs, find_child
from edge_ad.data.video import FramePacket, iter_video
from edge_ad.errors import UserError, make_dir

GAP_FRAMES = 1.5  # a gap of more than this many frame intervals (of the new rate) starts a new clip
MIN_CLIP_FRAMES = 2  # a tail shorter than this has no motion to learn and is dropped


@dataclass
class ImportSummary:
    split_dir: Path
    clips: list[str] = field(default_factory=list)
    frames: int = 0
    read: int = 0  # decoded frames, before resampling
    skipped: int = 0  # damaged frames stepped over
    dropped_tail: int = 0  # frames in tails too short to be a clip
    sources: list[tuple[str, float]] = field(default_factory=list)  # (file, its frame rate)

    def describe(self, fps: float) -> str:
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
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _recordings(sources: Sequence[Path]) -> list[FootageClip]:
    """The video files the sources name; frames are already in the layout's form and are refused."""
    found: list[FootageClip] = []
    for src in sources:
        clips = footage_clips(src)
        frames = [c for c in clips if c.kind == "frames"]
        if frames:
            raise UserError(
                f"{frames[0].path} is a folder of frames, already in the layout's form: copy it into "
                "ROOT/Train/ (or Test/) as a clip folder; import reads video files"
            )
        found += clips
    return found


def _segments(packets: Iterator[FramePacket], fps: float, clip_frames: int) -> Iterator[list[FramePacket]]:
    """Runs of at most ``clip_frames`` frames with no gap of more than ``GAP_FRAMES`` intervals inside."""
    run: list[FramePacket] = []
    for p in packets:
        if run and (len(run) == clip_frames or p.timestamp - run[-1].timestamp > GAP_FRAMES / fps):
            yield run
            run = []
        run.append(p)
    if run:
        yield run


def _next_number(split_dir: Path, prefix: str) -> int:
    numbers = [int(d.name[len(prefix) :]) for d in clip_dirs(split_dir) if d.name[len(prefix) :].isdigit()]
    return max(numbers, default=0) + 1


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
    ``Train/`` (or ``Test/``), numbered after the clips already there: more normal footage can be added."""
    if fps <= 0 or clip_seconds <= 0:
        raise UserError("--fps and --clip-seconds must be positive")
    recordings = _recordings([Path(s) for s in sources])
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a dataset folder (it is made if missing)")
    name = "Train" if split == "train" else "Test"
    split_dir = (find_child(root, name) if root.is_dir() else None) or root / name
    make_dir(split_dir, "dataset folder")
    number = _next_number(split_dir, name)
    clip_frames = max(MIN_CLIP_FRAMES, round(clip_seconds * fps))
    summary = ImportSummary(split_dir)
    for rec in recordings:
        rate = source_fps or rec.fps
        if rate <= 0:
            raise UserError(f"{rec.path} does not say its frame rate; give it with --source-fps")
        if rate < fps * 0.95:
            raise UserError(
                f"{rec.path} runs at {rate:g} frames/s, below --fps {fps:g}: import at --fps {rate:g} and "
                f"train with --set scoring.assumed_fps={rate:g} (frames cannot be made up)"
            )
        summary.sources.append((rec.path.name, rate))
        with iter_video(rec.path, source_fps) as stream:
            counted = _counting(stream, summary)
            for run in _segments(resample(counted, fps, rate), fps, clip_frames):
                if len(run) < MIN_CLIP_FRAMES:
                    summary.dropped_tail += len(run)
                    continue
                clip = split_dir / f"{name}{number:03d}"
                number += 1
                make_dir(clip, "clip folder")
                for i, p in enumerate(run, start=1):
                    _write_frame(clip / f"{i:03d}.png", p.image, size)
                summary.clips.append(clip.name)
                summary.frames += len(run)
            summary.skipped += stream.skipped
    if not summary.clips:
        raise UserError(f"no clip was written: the recordings hold fewer than {MIN_CLIP_FRAMES} decodable frames")
    return summary


def _counting(stream: Iterator[FramePacket], summary: ImportSummary) -> Iterator[FramePacket]:
    for p in stream:
        summary.read += 1
        yield p
