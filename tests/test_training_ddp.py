"""Distributed training: two CPU processes under torchrun (gloo) train the tiny config to a usable run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.slow
def test_torchrun_two_processes(tiny_scene: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp"
    cmd = [
        torchrun, "--standalone", "--nproc_per_node", "2", "-m", "edge_ad.cli.main", "train",
        "--config", str(CONFIGS / "tiny.yaml"), "--data", str(tiny_scene), "--out", str(out),
        "--set", "training.epochs=1", "--set", "training.prior_epochs=1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run ready") == 1  # rank 0 alone calibrates and reports
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["vqvae", "prior"]  # one log line per epoch, from rank 0 only
    assert (out / "prior.safetensors").is_file() and (out / "calibration.json").is_file()
