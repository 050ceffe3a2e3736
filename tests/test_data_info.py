"""``edge-ad data info`` and ``edge-ad synth`` through the real CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.mfile import parse_gt_file
from edge_ad.data.synth import GT_NAME


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("info") / "scene"
    code = subprocess.run(
        [sys.executable, "-m", "edge_ad.cli.main", "synth", str(root), "--train", "1", "--test", "3",
         "--frames", "30", "--size", "64x96", "--seed", "4"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert code.returncode == 0, code.stderr
    assert "test:  3 clips x 30 frames" in code.stdout
    return root


def test_json_counts_match_m_file_and_masks(scene: Path, cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = cli(["data", "info", str(scene), "--json"])
    assert code == 0
    info = json.loads(out)
    ranges = parse_gt_file(scene / GT_NAME)
    expected_per_clip = [sum(b - a + 1 for a, b in r) for r in ranges]
    assert [c["anomalous_frames"] for c in info["test"]["per_clip"]] == expected_per_clip
    assert info["test"]["anomalous_frames"] == sum(expected_per_clip)
    assert info["test"]["anomalous_fraction"] == pytest.approx(sum(expected_per_clip) / 90)
    assert info["train"] == {"clips": 1, "frames": 30, "clip_frames": {"Train001": 30}}
    assert info["frame_shape"] == [64, 96] and info["gt_file"].endswith(GT_NAME)
    assert info["test"]["clips_with_masks"] == 3
    fractions = []
    for name in ("Test001", "Test002", "Test003"):
        for p in sorted((scene / "Test" / f"{name}_gt").iterdir()):
            m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0
            if m.any():
                fractions.append(m.mean())
    assert len(fractions) == sum(expected_per_clip)
    assert info["test"]["mean_mask_coverage"] == pytest.approx(float(np.mean(fractions)))


def test_table_for_humans(scene: Path, cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = cli(["data", "info", str(scene)])
    assert code == 0
    assert "Test003" in out and "UCSDsynth.m" in out and "train: 1 clips, 30 frames" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "{tmp}/s", "--size", "64by96"], "--size '64by96' is not HEIGHTxWIDTH; write it like 158x238"),
        (["synth", "{tmp}/s", "--size", "8x8"], "--size 8x8 is out of range"),
        (["synth", "{tmp}/s", "--train", "-1"], "--train must be 0 or more clips, got -1"),
        (["synth", "{tmp}/s", "--train", "0", "--test", "0"], "--train and --test are both 0"),
        (["synth", "{tmp}/s", "--frames", "1"], "--frames must be at least 2"),
        (["synth", "{tmp}/full"], "is not empty and not a previous synthetic scene"),
        (["data", "info", "{tmp}/missing"], "dataset folder .*missing does not exist"),
        (["data", "info", "{tmp}/full"], "is not a UCSD-layout dataset"),
        (["data", "info", "{tmp}/badm"], r"UCSDped1\.m line 2: range '9:3' runs backwards"),
    ],
    ids=["size-format", "size-range", "negative", "no-clips", "frames", "foreign-folder", "missing", "layout", "m"],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]], args: list[str], message: str
):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    clip = tmp_path / "badm" / "Test" / "Test001"
    clip.mkdir(parents=True)
    cv2.imwrite(str(clip / "001.tif"), np.zeros((8, 8), np.uint8))
    (tmp_path / "badm" / "UCSDped1.m").write_text("TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [9:3];\n")
    code, out, err = cli([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-ad: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "s").exists()


def test_masks_eval_would_refuse_are_warned_about(
    scene: Path, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    import shutil

    data = tmp_path / "scene"
    shutil.copytree(scene, data)
    for p in (data / "Test" / "Test002_gt").iterdir():
        cv2.imwrite(str(p), np.zeros((32, 48), np.uint8))
    code, out, _ = cli(["data", "info", str(data)])
    assert code == 0
    assert "warning: Test002: masks are 32x48 but frames are 64x96" in out
    assert "Test001:" not in out.split("warning:", 1)[1]  # the other clips' masks are fine
    code, out, _ = cli(["data", "info", str(data), "--json"])
    problems = {c["name"]: c["problems"] for c in json.loads(out)["test"]["per_clip"]}
    assert problems == {"Test001": [], "Test002": ["masks are 32x48 but frames are 64x96"], "Test003": []}


def test_check_frames_lists_the_damaged_ones(
    scene: Path, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    import shutil

    data = tmp_path / "scene"
    shutil.copytree(scene, data)
    code, out, _ = cli(["data", "info", str(data), "--json"])
    assert code == 0 and json.loads(out)["damaged_frames"] is None  # not checked unless asked
    code, out, _ = cli(["data", "info", str(data), "--json", "--check-frames"])
    assert code == 0 and json.loads(out)["damaged_frames"] == {}
    frames = sorted((data / "Test" / "Test002").iterdir())
    frames[7].write_bytes(frames[7].read_bytes()[:64])  # truncated
    first = sorted((data / "Test" / "Test001").iterdir())[0]
    first.write_bytes(first.read_bytes()[:64])  # a masked clip's first frame: its size comes from the next
    code, out, _ = cli(["data", "info", str(data), "--json", "--check-frames"])
    assert code == 0
    assert json.loads(out)["damaged_frames"] == {"Test001": [first.name], "Test002": [frames[7].name]}
    assert all(not c["problems"] for c in json.loads(out)["test"]["per_clip"])
    code, out, _ = cli(["data", "info", str(data), "--check-frames"])
    assert code == 0
    assert "frames checked: 2 damaged" in out
    assert f"warning: Test002: cannot decode {frames[7].name}" in out


def test_check_frames_lists_frames_of_another_size(
    scene: Path, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """Training refuses a clip with such a frame; the check that runs before it said "0 damaged"."""
    import shutil

    import cv2
    import numpy as np

    data = tmp_path / "scene"
    shutil.copytree(scene, data)
    frames = sorted((data / "Train" / "Train001").iterdir())
    cv2.imwrite(str(frames[3]), np.zeros((40, 50), np.uint8))
    code, out, _ = cli(["data", "info", str(data), "--json", "--check-frames"])
    assert code == 0 and json.loads(out)["odd_size_frames"] == {"Train001": [f"{frames[3].name} (40x50)"]}
    code, out, _ = cli(["data", "info", str(data), "--check-frames"])
    assert f"Train001: {frames[3].name} (40x50) differ in size or colour" in out
