"""The runtime benchmark runs end to end on the tiny bundle and reports consistent figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_runtime_fps_benchmark(tiny_bundle: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.runtime_fps", "--bundle", str(tiny_bundle), "--batch", "1", "4",
           "--frames", "48"]  # fmt: skip
    run = subprocess.run(
        [*cmd, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result["batches"]) == {"1", "4"}
    for figures in result["batches"].values():
        lat = figures["latency_ms"]
        assert figures["frames"] == 48 and figures["fps"] > 0 and figures["inference_fps"] > 0
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert result["matmul_gflops"] > 0
    assert result["model"]["gflop_per_frame"] > 0 and result["model"]["nodes"] > 0
    assert result["command"].startswith("python -m benchmarks.runtime_fps --bundle")
    assert "frames/s end to end" in run.stderr and "reproduce: python -m benchmarks.runtime_fps" in run.stderr


def test_benchmark_refuses_a_missing_bundle(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.runtime_fps", "--bundle", str(tmp_path / "nope")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().startswith("edge-ad: error: bundle not found")


def test_benchmark_replays_a_recording_at_the_models_rate(tiny_bundle: Path, tmp_path: Path) -> None:
    """A 30 frames/s recording: decoded, resized and decimated to the model's 10 frames/s as live; asking for
    more maps than it holds at that rate is one line."""
    import cv2
    import numpy as np

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    for i in range(48):
        frame = np.full((240, 320, 3), 90, np.uint8)
        cv2.rectangle(frame, (5 * i, 100), (5 * i + 20, 140), (220, 220, 220), -1)
        writer.write(frame)
    writer.release()
    cmd = [sys.executable, "-m", "benchmarks.runtime_fps", "--bundle", str(tiny_bundle), "--batch", "2",
           "--frames", "16", "--video", str(video)]  # fmt: skip
    run = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["batches"]["2"]["frames"] == 16 and result["video"] == str(video.resolve())
    assert result["command"].endswith(f"--video {video}") and "replaying" in run.stderr
    short = subprocess.run([*cmd[:-3], "17", "--video", str(video)], cwd=ROOT, capture_output=True, text=True)
    assert short.returncode == 2 and "gives about 16 frames at the model's rate" in short.stderr
