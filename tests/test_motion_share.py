"""The motion-share diagnostic measures a real trained run, and refuses a wrong run path in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

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
