"""`edge-ad calibrate --normal`: more normal footage of the camera, read from real video files and frame folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.cli.main import main
from edge_ad.config import load_config
from edge_ad.data.footage import footage_clips
from edge_ad.data.synth import make_scene
from edge_ad.data.ucsd import open_ucsd
from edge_ad.errors import UserError
from edge_ad.scoring.calibrate import calibrate_run, footage_frames
from edge_ad.training.rundir import RunDir


def _write_video(path: Path, frames: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    h, w = frames.shape[1:3]
    out_w, out_h = size or (w, h)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (out_w, out_h))
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
    day = root / "day"
    day.mkdir()
    shutil.copy(video, day / "evening.avi")
    shutil.copytree(folder, day / "morning")
    wrong = _write_video(root / "other_camera.avi", clips[6].load_frames()[:10], size=(64, 64))
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00not a video\x00" * 100)
    return {"video": video, "folder": folder, "day": day, "wrong": wrong, "broken": broken}


def test_a_path_holds_a_video_a_frame_folder_or_a_folder_of_either(footage: dict[str, Path], tmp_path: Path) -> None:
    (video,) = footage_clips(footage["video"])
    assert video.kind == "video" and video.length == 48
    assert len(list(video.frames())) == 48
    (folder,) = footage_clips(footage["folder"])
    assert folder.kind == "frames" and folder.length == 48
    day = footage_clips(footage["day"])
    assert [c.kind for c in day] == ["video", "frames"]
    with pytest.raises(UserError, match="does not exist"):
        footage_clips(tmp_path / "nowhere")
    with pytest.raises(UserError, match="holds no frames"):
        footage_clips(tmp_path)
    with pytest.raises(UserError, match="cannot open"):
        footage_clips(footage["broken"])


def test_footage_joins_the_validation_clips_and_is_recorded(
    edited_run, tiny_scene: Path, footage: dict[str, Path]
) -> None:
    run = edited_run(lambda cfg: None)
    alone = calibrate_run(run, tiny_scene)
    calib = calibrate_run(run, tiny_scene, [footage["day"]])
    assert calib["val_frames"] == alone["val_frames"] + 96
    assert [(Path(f["path"]).name, f["frames"], f["used"]) for f in calib["normal_footage"]] == [
        ("evening.avi", 48, 48),
        ("morning", 48, 48),
    ]
    assert json.loads((run / "calibration.json").read_text())["normal_footage"] == calib["normal_footage"]
    # More normal frames move the statistics the threshold is set from.
    assert calib["val_score_median"] != alone["val_score_median"]


def test_long_footage_is_sampled_evenly_with_its_true_motion(tiny_run: Path, tiny_scene: Path, footage) -> None:
    cfg = load_config(tiny_run / "config.yaml")
    every, _ = footage_frames([footage["folder"]], cfg, RunDir(tiny_run), tiny_scene)
    sampled, read = footage_frames([footage["folder"]], cfg, RunDir(tiny_run), tiny_scene, budget=12)
    assert read == [{"path": str(footage["folder"]), "frames": 48, "used": 12}]
    # every 4th frame, each with its difference to the frame before it (not to the previous kept frame)
    np.testing.assert_array_equal(sampled, every[::4])


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def test_cli_calibrates_on_footage_and_says_how_much(edited_run, tiny_scene: Path, footage, capsys) -> None:
    run = edited_run(lambda cfg: None)
    code, text = _cli(
        ["calibrate", "--run", str(run), "--data", str(tiny_scene), "--normal", str(footage["video"])], capsys
    )
    assert code == 0, text
    assert "and 48 of normal footage: alert threshold" in text


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("trained", "is a clip the model trained on"),
        ("wrong", "has 64x64 frames but the run's camera gives 128x96"),
        ("broken", "cannot open"),
        ("missing", "does not exist"),
    ],
)
def test_bad_footage_is_one_line_and_leaves_the_calibration_alone(
    which: str, message: str, edited_run, tiny_scene: Path, footage, capsys, tmp_path: Path
) -> None:
    run = edited_run(lambda cfg: None)
    before = (run / "calibration.json").read_text()
    trained = RunDir(run).read_json("split")["train"][0]
    path = {
        "trained": tiny_scene / "Train" / trained,
        "missing": tmp_path / "nowhere.mp4",
    }.get(which) or footage[which]
    code, text = _cli(["calibrate", "--run", str(run), "--data", str(tiny_scene), "--normal", str(path)], capsys)
    assert code == 2
    assert message in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1
    assert (run / "calibration.json").read_text() == before
