"""`edge-ad calibrate --normal`: more normal footage of the camera, read from real video files and frame folders."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge_ad.config import load_config
from edge_ad.data.footage import footage_clips
from edge_ad.data.synth import make_scene
from edge_ad.data.ucsd import list_images, open_ucsd
from edge_ad.errors import UserError
from edge_ad.scoring.calibrate import calibrate_run, sample_footage, usable_footage
from edge_ad.scoring.load import load_pipeline
from edge_ad.training.rundir import RunDir


def _write_video(path: Path, frames: np.ndarray, size: tuple[int, int] | None = None, fps: float = 10.0) -> Path:
    h, w = frames.shape[1:3]
    out_w, out_h = size or (w, h)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (out_w, out_h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(cv2.resize(f, (out_w, out_h)), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two normal clips of the tiny scene's camera that training never saw (the same seed makes the same
    camera, and the same first six training clips): one as a video file, one as a folder of frames."""
    root = tmp_path_factory.mktemp("footage")
    make_scene(root / "more", n_train=8, n_test=0, frames=48, seed=11, size=(96, 128))
    clips = open_ucsd(root / "more").train
    video = _write_video(root / "evening.avi", clips[6].load_frames())
    folder = root / "morning"
    shutil.copytree(clips[7].frame_paths[0].parent, folder)
    day = root / "day"  # a day of recordings: a video, a frame folder, and what is not footage
    day.mkdir()
    shutil.copy(video, day / "evening.avi")
    shutil.copytree(folder, day / "morning")
    shutil.copytree(folder, day / "morning_gt")
    (day / "._evening.avi").write_bytes(b"\x00resource fork\x00")
    mixed = root / "mixed"
    shutil.copytree(folder, mixed)
    shutil.copy(video, mixed / "evening.avi")
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00not a video\x00" * 100)
    return {
        "video": video,
        "folder": folder,
        "day": day,
        "mixed": mixed,
        "image": folder / sorted(os.listdir(folder))[0],
        "wrong": _write_video(root / "other_camera.avi", clips[6].load_frames()[:10], size=(64, 64)),
        "broken": broken,
    }


def test_a_path_holds_a_video_a_frame_folder_or_a_folder_of_either(
    footage: dict[str, Path], tiny_scene: Path, tmp_path: Path
) -> None:
    (video,) = footage_clips(footage["video"])
    assert (video.kind, video.length, video.width, video.height) == ("video", 48, 128, 96)
    (folder,) = footage_clips(footage["folder"])
    assert (folder.kind, folder.length, folder.width, folder.height) == ("frames", 48, 128, 96)
    # mask folders and hidden files are not footage
    assert [(c.kind, c.path.name) for c in footage_clips(footage["day"])] == [
        ("video", "evening.avi"),
        ("frames", "morning"),
    ]
    for path, message in [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path, "holds no footage"),
        (footage["broken"], "cannot open"),
        (footage["mixed"], "mixes frames with clip folders or videos"),
        (footage["image"], "is one image; give the folder"),
        (tiny_scene, "is a dataset root; give its normal clips: --normal .*Train"),
    ]:
        with pytest.raises(UserError, match=message):
            footage_clips(path)


def test_footage_joins_the_validation_clips_and_is_recorded(
    edited_run, tiny_scene: Path, footage: dict[str, Path]
) -> None:
    run = edited_run(lambda cfg: None)
    alone = calibrate_run(run, tiny_scene)
    calib = calibrate_run(run, tiny_scene, [footage["day"], footage["day"] / "evening.avi"])  # read once
    assert calib["val_frames"] == alone["val_frames"] + 96
    assert calib["val_minutes"] > alone["val_minutes"]
    assert [(Path(f["path"]).name, f["frames"], f["sampled"], f["skipped"]) for f in calib["normal_footage"]] == [
        ("evening.avi", 48, 48, 0),
        ("morning", 48, 48, 0),
    ]
    assert json.loads((run / "calibration.json").read_text())["normal_footage"] == calib["normal_footage"]


def test_the_threshold_sees_all_the_footage_when_the_statistics_see_a_sample(
    edited_run, tiny_scene: Path, footage: dict[str, Path]
) -> None:
    """A budget that only the whole footage resolves: resolved, though the statistics took 20 of 96 frames."""
    run = edited_run(lambda cfg: None)
    val = calibrate_run(run, tiny_scene)["val_frames"]
    fps = 10.0
    per_hour = fps * 3600 / (val + 90)  # one exceedance allowed from val + 90 frames on
    edit = yaml.safe_load((run / "config.yaml").read_text())
    edit["scoring"].update(false_alarms_per_hour=per_hour, assumed_fps=fps)
    (run / "config.yaml").write_text(yaml.safe_dump(edit))
    calib = calibrate_run(run, tiny_scene, [footage["day"]], budget=10)
    assert calib["val_frames"] == val + 96
    assert calib["stats_frames"] == val + sum(f["sampled"] for f in calib["normal_footage"]) <= val + 20
    assert calib["budget_resolved"]


def test_footage_is_sampled_evenly_with_its_true_motion_even_when_its_length_is_wrong(
    tiny_run: Path, tiny_scene: Path, footage
) -> None:
    cfg = load_config(tiny_run / "config.yaml")
    clips = usable_footage([footage["folder"]], RunDir(tiny_run), open_ucsd(tiny_scene), 10.0)
    every, _ = sample_footage(clips, cfg)
    sampled, read = sample_footage(clips, cfg, budget=12)
    assert [(r["frames"], r["sampled"]) for r in read] == [(48, 12)]
    # every 4th frame, each with its difference to the frame before it (not to the previous kept frame)
    np.testing.assert_array_equal(sampled, every[::4])
    # A container that says it holds one frame: the stride doubles as frames keep coming.
    lying = [dataclasses.replace(clips[0], length=1)]
    sampled, read = sample_footage(lying, cfg, budget=5)
    assert len(sampled) <= 10 and read[0]["sampled"] == len(sampled)
    stride = 48 // len(sampled) if 48 % len(sampled) == 0 else 48 // len(sampled) + 1
    np.testing.assert_array_equal(sampled, every[::stride])


def _calibrate_cli(run: Path, scene: Path, *options: str | Path) -> subprocess.CompletedProcess[str]:
    """``edge-ad calibrate --run RUN --data SCENE OPTIONS`` in its own process."""
    args = ["calibrate", "--run", str(run), "--data", str(scene), *map(str, options)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "edge_ad.cli.main", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_cli_calibrates_on_footage_and_says_how_much(edited_run, tiny_scene: Path, footage) -> None:
    run = edited_run(lambda cfg: None)
    done = _calibrate_cli(run, tiny_scene, "--normal", footage["video"])
    assert done.returncode == 0, done.stderr
    assert "and 48 of normal footage: alert threshold" in done.stdout


def test_cli_warns_of_damaged_footage_frames_it_skipped(edited_run, tiny_scene: Path, footage, tmp_path: Path) -> None:
    run = edited_run(lambda cfg: None)
    folder = tmp_path / "morning"
    shutil.copytree(footage["folder"], folder)
    sorted(folder.iterdir())[5].write_bytes(b"not a frame")
    done = _calibrate_cli(run, tiny_scene, "--normal", folder)
    assert done.returncode == 0, done.stderr
    assert "and 47 of normal footage" in done.stdout
    assert f"warning: {folder.resolve()}: 1 damaged frame(s) skipped" in done.stderr


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("trained", "is a clip the model trained on"),
        ("trained copy", "is a copy of {train}, a clip the model trained on"),
        ("validation copy", "is a copy of {val}, one of the run's validation clips"),
        ("test copy", "is a copy of Test002, a test clip"),
        ("validation", "is one of the run's validation clips"),
        ("test", "is a test clip"),
        ("masks", "is a folder of ground-truth masks, not footage"),
        ("device", "/dev/null is neither a file nor a folder"),
        ("wrong", "has 64x64 frames but the run's camera gives 128x96"),
        ("broken", "cannot open"),
        ("empty", "no frame of"),
        ("missing", "does not exist"),
    ],
)
def test_bad_footage_is_one_line_and_leaves_the_calibration_alone(
    which: str, message: str, edited_run, tiny_scene: Path, footage, tmp_path: Path
) -> None:
    run = edited_run(lambda cfg: None)
    files = ("calibration.json", "normalisation.safetensors")
    before = [(run / f).read_bytes() for f in files]
    split = RunDir(run).read_json("split")
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96)).release()
    copies = {  # a clip folder copied elsewhere under another name: the same files, another path
        "trained copy": tiny_scene / "Train" / split["train"][0],
        "validation copy": tiny_scene / "Train" / split["val"][0],
        "test copy": tiny_scene / "Test" / "Test002",
    }
    if which in copies:
        shutil.copytree(copies[which], tmp_path / "recordings" / "clip")
    path = {
        "trained": tiny_scene / "Train" / split["train"][0],
        "validation": tiny_scene / "Train" / split["val"][0],
        "test": tiny_scene / "Test",
        "masks": tiny_scene / "Test" / "Test002_gt",
        "device": Path("/dev/null"),
        "empty": empty,
        "missing": tmp_path / "nowhere.mp4",
    }.get(which) or (tmp_path / "recordings" if which in copies else footage[which])
    done = _calibrate_cli(run, tiny_scene, "--normal", path)
    assert done.returncode == 2
    assert message.format(train=split["train"][0], val=split["val"][0]) in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line: no FFmpeg or OpenCV chatter, no traceback
    assert [(run / f).read_bytes() for f in files] == before


def test_footage_slower_than_the_model_is_warned_about(tiny_run: Path, tiny_scene: Path, footage, capsys) -> None:
    """The motion channel is the difference to the previous frame: at a lower rate, motion looks faster, and
    frames cannot be made up."""
    ds, run = open_ucsd(tiny_scene), RunDir(tiny_run)
    usable_footage([footage["video"]], run, ds, 10.0)
    assert "warning" not in capsys.readouterr().out
    usable_footage([footage["video"]], run, ds, 25.0)
    assert "runs at 10 frames/s, below the model's 25: its motion differs" in capsys.readouterr().out


def test_faster_footage_is_read_at_the_models_rate(tiny_run: Path, tiny_scene: Path, tmp_path: Path, capsys) -> None:
    """A 30 frames/s recording of the camera: every third frame, each with its difference to the kept frame
    before it, as the model saw motion in training."""
    cfg = load_config(tiny_run / "config.yaml")
    frames = open_ucsd(tiny_scene).train[0].load_frames()[:30]
    video = _write_video(tmp_path / "fast.avi", frames, fps=30.0)
    clips = usable_footage([video], RunDir(tiny_run), open_ucsd(tiny_scene), 10.0)
    assert "warning" not in capsys.readouterr().out
    sampled, read = sample_footage(clips, cfg)
    assert read[0]["frames"] == 10 and read[0]["fps"] == 30.0
    ten = _write_video(tmp_path / "ten.avi", frames[::3], fps=10.0)
    expected, _ = sample_footage(usable_footage([ten], RunDir(tiny_run), open_ucsd(tiny_scene), 10.0), cfg)
    np.testing.assert_array_equal(sampled, expected)


def test_a_new_clip_that_starts_like_a_trained_one_is_not_a_copy(
    tiny_run: Path, tiny_scene: Path, footage, tmp_path: Path
) -> None:
    """A copy is known by its first and last frame files and its length: one shared frame (a placeholder, a
    black frame) does not make new footage a copy."""
    run = RunDir(tiny_run)
    trained = list_images(tiny_scene / "Train" / run.read_json("split")["train"][0])
    clip = tmp_path / "clip"
    shutil.copytree(footage["folder"], clip)
    shutil.copy(trained[0], list_images(clip)[0])
    assert [c.path for c in usable_footage([clip], run, open_ucsd(tiny_scene), 10.0)] == [clip.resolve()]
    assert len(list_images(clip)) == len(trained)
    shutil.copy(trained[-1], list_images(clip)[-1])  # as long, same first and last files: taken for a copy
    with pytest.raises(UserError, match="is a copy of"):
        usable_footage([clip], run, open_ucsd(tiny_scene), 10.0)


def test_calibrate_set_changes_the_runs_scoring_then_calibrates(edited_run, tiny_scene: Path) -> None:
    """A site where walking anywhere is normal: per-pixel statistics off, written into the run with the
    calibration made for it, so the run loads without a stale-calibration error."""
    from edge_ad.scoring.load import load_pipeline

    run = edited_run(lambda cfg: cfg["scoring"].update(normalise="pixel"))
    assert _calibrate_cli(run, tiny_scene).returncode == 0
    assert json.loads((run / "calibration.json").read_text())["normalise"] == "pixel"
    done = _calibrate_cli(run, tiny_scene, "--set", "scoring.normalise=global")
    assert done.returncode == 0, done.stderr
    assert load_config(run / "config.yaml").scoring.normalise == "global"
    assert json.loads((run / "calibration.json").read_text())["normalise"] == "global"
    cfg, _, calib = load_pipeline(run)
    assert cfg.scoring.normalise == "global" and calib is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.width=8", "calibrate changes only scoring.* options"),
        ("scoring.bogus=1", "--set scoring.bogus=1"),
        ("scoring.normalise=sideways", "--set scoring.normalise=sideways"),
        ("scoring.assumed_fps=25", "scoring.assumed_fps is the frame rate of the footage the run was trained on"),
    ],
)
def test_calibrate_set_refuses_what_it_cannot_change(edited_run, tiny_scene: Path, override: str, message: str) -> None:
    run = edited_run(lambda cfg: None)
    before = [(run / f).read_bytes() for f in ("config.yaml", "calibration.json")]
    done = _calibrate_cli(run, tiny_scene, "--set", override)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert [(run / f).read_bytes() for f in ("config.yaml", "calibration.json")] == before


def test_calibrate_set_leaves_the_config_as_it_was_when_calibration_fails(edited_run, tmp_path: Path) -> None:
    run = edited_run(lambda cfg: None)
    before = (run / "config.yaml").read_bytes()
    done = _calibrate_cli(run, tmp_path / "gone", "--set", "scoring.normalise=global")
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert (run / "config.yaml").read_bytes() == before


def test_recent_footage_refreshes_the_background_maps_scene(edited_run, tiny_scene: Path, tmp_path: Path) -> None:
    """A crate left in view since training: calibrating on footage that shows it puts it in the background."""
    make_scene(tmp_path / "more", n_train=8, n_test=0, frames=48, seed=11, size=(96, 128))
    parked = tmp_path / "parked"
    parked.mkdir()
    for clip in open_ucsd(tmp_path / "more").train[6:]:
        frames = clip.load_frames().copy()
        frames[:, 10:40, 20:60] = 250  # in the model's 64x64 input: rows 7-26, columns 10-30
        _write_video(parked / f"{clip.name}.avi", frames)
        _write_video(parked / f"{clip.name}_again.avi", frames[::-1])
    weights = {"residual@motion": 1.0, "background": 0.75}
    run = edited_run(lambda cfg: cfg["scoring"].update(normalise="pixel", weights=weights, fusion="max"))
    calibrate_run(run, tiny_scene)
    before = load_pipeline(run)[1].scorer.background[0, 10:24, 14:28].mean()
    calib = calibrate_run(run, tiny_scene, [parked])
    assert sum(r["frames"] for r in calib["normal_footage"]) > calib["stats_frames"] / 2  # the footage's majority
    after = load_pipeline(run)[1].scorer.background[0, 10:24, 14:28].mean()
    assert float(after) > 0.9 > float(before) + 0.3
