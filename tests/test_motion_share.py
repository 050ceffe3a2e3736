"""The motion-share diagnostic: its measure on frames whose answer is known, a real trained run, and a wrong
run path refused in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.motion_share import share_sums

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "benchmarks.motion_share", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_motion_share_on_the_tiny_run(tiny_run: Path, tiny_scene: Path) -> None:
    run = _run("--run", str(tiny_run), "--data", str(tiny_scene), "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert list(result["channels"]) == ["motion k=2"]  # configs/tiny.yaml: temporal_offsets [2]
    for region in ("anomaly", "other"):
        r = result["channels"]["motion k=2"][region]
        assert r["moving_pixels"] > 0, region  # the tiny scene's test clips hold walkers and anomalies
        assert math.isfinite(r["share"]) and -1.0 < r["share"] < 1.5, r
    assert "share of the motion signal the decoder reproduces" in run.stderr
    assert "reproduce: python -m benchmarks.motion_share --run" in run.stderr


def test_motion_share_wrong_run(tmp_path: Path, tiny_scene: Path) -> None:
    run = _run("--run", str(tmp_path / "missing"), "--data", str(tiny_scene))
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def _frames(colour: int, groups: int) -> torch.Tensor:
    """[4, colour * (1 + groups), 16, 16]: a frame, then each motion group 0.5 +- a moving square's change."""
    x = torch.full((4, colour * (1 + groups), 16, 16), 0.5)
    x[:, :colour] = torch.rand(4, colour, 16, 16)
    for j in range(groups):
        x[:, colour * (1 + j) : colour * (2 + j), 4:12, 2 + 2 * j : 8 + 2 * j] += 0.3 * (j + 1) / groups
    return x


def test_share_of_an_exact_and_of_a_still_reconstruction() -> None:
    x = _frames(colour=1, groups=1)
    gt = torch.zeros(4, 16, 16, dtype=torch.bool)
    gt[:, 4:12, 2:5] = True  # part of the square is an anomaly, the rest is not
    exact, still = share_sums(x, x.clone(), gt, 1), share_sums(x, torch.full_like(x, 0.5), gt, 1)
    for region in (0, 1):
        assert exact[0, region, 2] > 0 and math.isclose(exact[0, region, 0] / exact[0, region, 1], 1.0)
        assert still[0, region, 0] == 0.0 and still[0, region, 1] > 0
    assert exact[0, 0, 2] == 4 * 8 * 3 and exact[0, 1, 2] == 4 * 8 * 3  # the moving square's pixels, split


def test_share_reads_each_colour_motion_group_of_its_own() -> None:
    """Colour with two offsets: channels [b, g, r, b-k1, g-k1, r-k1, b-k2, g-k2, r-k2]. A reconstruction exact
    on the first group and still on the second reads 1 and 0, whatever the frame's channels hold."""
    x = _frames(colour=3, groups=2)
    x_hat = x.clone()
    x_hat[:, 6:9] = 0.5
    x_hat[:, :3] = 0.0
    sums = share_sums(x, x_hat, torch.zeros(4, 16, 16, dtype=torch.bool), 3)
    assert sums.shape == (2, 2, 3)
    assert math.isclose(sums[0, 1, 0] / sums[0, 1, 1], 1.0) and sums[1, 1, 0] == 0.0
    assert sums[0, 1, 2] == sums[1, 1, 2] == 4 * 3 * 8 * 6  # each group's three colour values of the square
