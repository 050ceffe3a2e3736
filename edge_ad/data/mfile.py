"""Frame-level ground truth from the UCSD ``.m`` files.

UCSD ships its test labels as a MATLAB script, one ``TestVideoFile{end+1}.gt_frame = [61:180];`` per test clip.
We read that small subset of MATLAB by hand (there is no library for it, and running MATLAB is not an option)
and fail loudly, with the line number, on anything we do not understand: a silently misread label file would
corrupt every evaluation number downstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ad.errors import UserError

# Inclusive, 1-based (first, last) frame ranges, exactly as written in the file.
FrameRanges = list[tuple[int, int]]

_GT_LINE = re.compile(r"^TestVideoFile\s*\{\s*(?P<index>end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*(?P<rhs>.*)$")
_RANGE = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")
_EXAMPLE = "expected e.g. [61:180] or [1:10, 20, 30:40]"


@dataclass(frozen=True)
class GtEntry:
    """One test clip's labels: its frame ranges, and the anomaly kinds its line's trailing comment names
    (``... = [61:180];  % cyclist, cart``, as ``edge-ad synth`` writes; ``% no anomaly`` names none). UCSD's
    own files carry no such comment; a user labelling footage may add one, and ``edge-ad eval`` then scores
    each kind on its own."""

    ranges: FrameRanges
    kinds: tuple[str, ...] = ()


NO_KIND = "no anomaly"


def _strip_comment(line: str) -> str:
    return line.split("%", 1)[0].strip()


def _kinds(line: str) -> tuple[str, ...]:
    comment = line.partition("%")[2]
    names = (k.strip() for k in comment.split(","))
    return tuple(k for k in names if k and k.lower() != NO_KIND)


def _parse_list(rhs: str, where: str) -> FrameRanges:
    """``[61:180, 200]`` (optionally followed by ``;``) -> [(61, 180), (200, 200)]."""
    body = rhs.strip().rstrip(";").strip()
    if body.count("[") != 1 or body.count("]") != 1 or not (body.startswith("[") and body.endswith("]")):
        raise UserError(f"{where}: unbalanced or missing brackets in gt_frame list; {_EXAMPLE}")
    inner = re.sub(r"\s*:\s*", ":", body[1:-1].strip())
    ranges: FrameRanges = []
    for token in (t for t in re.split(r"[\s,]+", inner) if t):
        m = _RANGE.match(token)
        if m is None:
            raise UserError(f"{where}: cannot read {token!r} as a frame number or range; {_EXAMPLE}")
        first = int(m.group(1))
        if m.group(3) is not None:  # MATLAB a:step:b
            step, last = int(m.group(2)), int(m.group(3))
            if step < 1:
                raise UserError(f"{where}: range {token!r} needs a positive step")
            last = first + (last - first) // step * step if last >= first else last
        else:
            step, last = 1, int(m.group(2)) if m.group(2) is not None else first
        if first < 1:
            raise UserError(f"{where}: frame numbers start at 1, got {token!r}")
        if last < first:
            raise UserError(f"{where}: range {token!r} runs backwards; write it as first:last")
        if step == 1:
            ranges.append((first, last))
        else:
            ranges.extend((f, f) for f in range(first, last + 1, step))
    return ranges


def parse_gt_entries(text: str, name: str = "<gt>") -> list[GtEntry | None]:
    """Labels per test clip, in clip order; ``None`` where an explicit index skipped a clip."""
    clips: list[GtEntry | None] = []
    explicit: set[int] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if "gt_frame" not in line:
            continue
        where = f"{name} line {lineno}"
        m = _GT_LINE.match(line)
        if m is None:
            raise UserError(f"{where}: cannot read {line!r}; expected TestVideoFile{{end+1}}.gt_frame = [61:180];")
        entry = GtEntry(_parse_list(m.group("rhs"), where), _kinds(raw))
        index = m.group("index")
        if index[0].isdigit():
            i = int(index) - 1
            if i < 0:
                raise UserError(f"{where}: clip indices start at 1")
            if i in explicit:
                raise UserError(f"{where}: TestVideoFile{{{i + 1}}} is given twice")
            explicit.add(i)
            clips.extend([None] * (i + 1 - len(clips)))
            clips[i] = entry
        else:
            clips.append(entry)
    return clips


def parse_gt_text(text: str, name: str = "<gt>") -> list[FrameRanges | None]:
    """Frame ranges per test clip, in clip order; ``None`` where an explicit index skipped a clip."""
    return [e.ranges if e is not None else None for e in parse_gt_entries(text, name)]


def read_gt_entries(path: str | Path) -> list[GtEntry | None]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"cannot read ground-truth file {p}: {e.strerror or e}") from None
    return parse_gt_entries(text, str(p))


def parse_gt_file(path: str | Path) -> list[FrameRanges | None]:
    return [e.ranges if e is not None else None for e in read_gt_entries(path)]


def ranges_to_labels(ranges: FrameRanges, n_frames: int, where: str = "ground truth") -> np.ndarray:
    """Bool [n_frames] from 1-based inclusive ranges; a range past the clip's end is an error, not a clip."""
    labels = np.zeros(n_frames, dtype=bool)
    for first, last in ranges:
        if last > n_frames:
            raise UserError(f"{where}: frames {first}:{last} exceed the clip's {n_frames} frames")
        labels[first - 1 : last] = True
    return labels


def labels_to_ranges(labels: np.ndarray) -> FrameRanges:
    """The inverse of ``ranges_to_labels``: runs of True as 1-based inclusive ranges."""
    x = np.concatenate([[False], np.asarray(labels, dtype=bool), [False]])
    edges = np.flatnonzero(x[1:] != x[:-1])
    return [(int(a) + 1, int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def format_ranges(ranges: FrameRanges) -> str:
    """MATLAB list text, e.g. ``[61:180, 200]``."""
    return "[" + ", ".join(f"{a}:{b}" if b != a else f"{a}" for a, b in ranges) + "]"
