"""The synthetic scene: UCSD layout, determinism, labels = masks = .m file, and anomalies that really differ."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.mfile import parse_gt_file, ranges_to_labels
from edge_ad.data.synth import GT_NAME, _visible, make_camera, make_scene
from edge_ad.data.ucsd import open_ucsd, read_image
from edge_ad.errors import UserError

SMALL = {"n_train": 2, "n_test": 3, "frames": 40, "size": (64, 96)}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("synth") / "scene"
    return root, make_scene(root, seed=5, **SMALL)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_writes_exact_ucsd_layout(scene: tuple[Path, object]) -> None:
    root, summary = scene
    assert sorted(p.name for p in (root / "Train").iterdir()) == ["Train001", "Train002"]
    assert sorted(p.name for p in (root / "Test").iterdir()) == [
        "Test001",
        "Test001_gt",
        "Test002",
        "Test002_gt",
        "Test003",
        "Test003_gt",
    ]
    frames = sorted(p.name for p in (root / "Train" / "Train001").iterdir())
    assert frames[0] == "001.tif" and frames[-1] == "040.tif" and len(frames) == 40
    masks = sorted(p.name for p in (root / "Test" / "Test002_gt").iterdir())
    assert masks[0] == "001.bmp" and len(masks) == 40
    assert (root / GT_NAME).is_file()
    img = cv2.imread(str(root / "Test" / "Test001" / "007.tif"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (64, 96)
    mask = cv2.imread(str(root / "Test" / "Test001_gt" / "007.bmp"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    assert summary.total_frames == 5 * 40 and summary.test_clips == 3


def test_labels_masks_and_m_file_agree(scene: tuple[Path, object]) -> None:
    root, summary = scene
    ds = open_ucsd(root, require_test_labels=True)
    gt = parse_gt_file(root / GT_NAME)
    assert len(gt) == len(ds.test) == 3
    for clip, ranges in zip(ds.test, gt, strict=True):
        masks = clip.load_masks()
        from_masks = masks.reshape(len(masks), -1).any(axis=1)
        np.testing.assert_array_equal(ranges_to_labels(ranges, len(clip)), from_masks)
        np.testing.assert_array_equal(clip.labels, from_masks)
        assert summary.anomalous_frames[clip.name] == int(from_masks.sum())
    assert ds.test[0].labels.any(), "the first test clip always holds an anomaly"


def test_same_seed_same_bytes_other_seed_other_camera(tmp_path: Path, scene: tuple[Path, object]) -> None:
    root, _ = scene
    again = make_scene(tmp_path / "again", seed=5, **SMALL).root
    assert _digest(root) == _digest(again)
    other = make_scene(tmp_path / "other", seed=6, n_train=1, n_test=0, frames=2, size=(64, 96)).root
    a = read_image(root / "Train" / "Train001" / "001.tif").astype(float)
    b = read_image(other / "Train" / "Train001" / "001.tif").astype(float)
    assert np.abs(a - b).mean() > 10, "another seed must be another camera (walkway, lawn, tones)"


def test_train_and_test_share_the_camera(scene: tuple[Path, object]) -> None:
    root, _ = scene
    ds = open_ucsd(root)
    train_median = np.median(ds.train[0].load_frames(), axis=0)
    test_median = np.median(ds.test[1].load_frames(), axis=0)
    assert np.abs(train_median - test_median).mean() < 6  # same background; only the movers differ


def test_anomaly_fraction_like_ped1(tmp_path: Path) -> None:
    summary = make_scene(tmp_path / "s", n_train=0, n_test=10, frames=200, seed=1, size=(64, 96))
    assert 0.3 <= summary.anomalous_fraction <= 0.7
    assert sum(1 for n in summary.anomalous_frames.values() if n > 0) >= 6


def _centroid_speed(masks: np.ndarray) -> float:
    """Mean per-frame displacement of the mask centroid over frames where the object is fully in view."""
    pts = []
    for m in masks:
        ys, xs = np.nonzero(m)
        full = xs.size and xs.min() > 0 and xs.max() < m.shape[1] - 1 and ys.min() > 0 and ys.max() < m.shape[0] - 1
        pts.append((xs.mean(), ys.mean()) if full else None)
    steps = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(pts, pts[1:], strict=False) if a and b]
    return float(np.median(steps)) if steps else float("nan")


def test_fast_anomalies_move_faster_than_pedestrians(tmp_path: Path) -> None:
    """Skaters and cyclists differ by speed: measured from the written masks, against pedestrians' own tracks."""
    from edge_ad.data.synth import _pedestrians

    cam = make_camera(2, (158, 238))
    rng = np.random.default_rng(0)
    walkers = _pedestrians(rng, cam, 200)
    ped_steps = []
    for m in walkers:
        track = [m.track[f] for f in sorted(m.track) if _visible(cam, *m.track[f], cam.person_height(m.track[f][1]))]
        ped_steps += [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(track, track[1:], strict=False)]
    ped_speed = float(np.median(ped_steps))

    fast: dict[str, list[float]] = {"skater": [], "cyclist": []}
    for seed in range(11, 21):  # scenes until one has a lone skater and a lone cyclist
        root = tmp_path / f"fast{seed}"
        summary = make_scene(root, n_train=0, n_test=5, frames=100, seed=seed)
        for clip in open_ucsd(root).test:
            kinds = summary.events[clip.name]
            if len(kinds) == 1 and kinds[0] in fast:
                speed = _centroid_speed(clip.load_masks())
                if np.isfinite(speed):
                    fast[kinds[0]].append(speed)
        if fast["skater"] and fast["cyclist"]:
            break
    assert fast["skater"] and fast["cyclist"], "ten scenes without a lone skater and a lone cyclist"
    slowest = min(min(v) for v in fast.values())
    assert slowest > 1.5 * ped_speed, (fast, ped_speed)


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        make_scene(tmp_path, n_train=1, n_test=1, frames=3, size=(64, 96))
    make_scene(tmp_path, n_train=1, n_test=1, frames=3, size=(64, 96), force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rewrites_a_previous_scene_without_leftovers(tmp_path: Path) -> None:
    make_scene(tmp_path, n_train=3, n_test=2, frames=3, size=(64, 96))
    make_scene(tmp_path, n_train=1, n_test=1, frames=3, size=(64, 96))
    ds = open_ucsd(tmp_path)
    assert [c.name for c in ds.train] == ["Train001"] and [c.name for c in ds.test] == ["Test001"]


def test_a_scene_footage_was_added_to_is_no_longer_ours_to_replace(tmp_path: Path) -> None:
    """Imported clips (or a label file of the user's) once went with a re-run of synth, without --force."""
    import shutil

    make_scene(tmp_path, n_train=2, n_test=1, frames=3, size=(64, 96))
    shutil.copytree(tmp_path / "Train" / "Train002", tmp_path / "Train" / "Train003")  # say, imported
    with pytest.raises(UserError, match="not a previous synthetic scene"):
        make_scene(tmp_path, n_train=2, n_test=1, frames=3, size=(64, 96))
    assert (tmp_path / "Train" / "Train003").is_dir()
    shutil.rmtree(tmp_path / "Train" / "Train003")
    (tmp_path / "UCSDped1.m").write_text("TestVideoFile = {};\n")
    with pytest.raises(UserError, match="not a previous synthetic scene"):
        make_scene(tmp_path, n_train=2, n_test=1, frames=3, size=(64, 96))
