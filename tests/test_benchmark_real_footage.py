"""The real-footage benchmark's folds: what each trains and tests on, and the labels of its sped-up stretches.

Training on the recording takes minutes and needs ``vtest.avi`` (Debian's opencv-doc), so the benchmark
itself is run by hand (README, Results); this checks the layout it evaluates on, with frames that carry
their own number.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_ad.benchmarks.real_footage import FOLDS, make_fold
from edge_ad.data.ucsd import open_ucsd, read_image


def _numbered_frames(folder: Path, n: int = 795) -> list[Path]:
    """Frame i holds i in its first two pixels (i = 256 * a + b)."""
    folder.mkdir()
    paths = []
    for i in range(n):
        f = np.zeros((8, 8), np.uint8)
        f[0, 0], f[0, 1] = divmod(i, 256)
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
        paths.append(folder / f"{i:03d}.png")
    return paths


def _numbers(clip) -> list[int]:
    return [256 * int(read_image(p)[0, 0]) + int(read_image(p)[0, 1]) for p in clip.frame_paths]


def test_each_fold_tests_on_frames_it_never_trains_on(tmp_path: Path) -> None:
    frames = _numbered_frames(tmp_path / "whole")
    for name, (start, stop) in FOLDS.items():
        ds = open_ucsd(make_fold(frames, (start, stop), tmp_path / name), require_test_labels=True)
        trained = [n for c in ds.train for n in _numbers(c)]
        assert trained == list(range(start, stop)) and [len(c) for c in ds.train] == [40] * 12
        tested = [_numbers(c) for c in ds.test]
        assert not set(trained) & {n for t in tested for n in t}
        first = 0 if start > 0 else stop  # the test part: the frames before the training span, else after it
        assert tested[0] == list(range(first, first + 120)) and not ds.test[0].labels.any()
        # A frame is labelled exactly when it is more than one source frame after the one before it: its
        # motion channel then spans 0.2 or 0.3 s of the recording. Test002 plays twice as fast, Test003 thrice.
        for clip, numbers, factor, count in ((ds.test[1], tested[1], 2, 20), (ds.test[2], tested[2], 3, 18)):
            steps = np.diff([numbers[0], *numbers])
            assert list(clip.labels) == list(steps > 1) and clip.labels.sum() == count
            assert set(steps[clip.labels]) == {factor} and set(steps[~clip.labels]) <= {0, 1}
